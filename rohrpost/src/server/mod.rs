//! The tokio-tungstenite server: builder, limits, accept loop, shutdown.

#[cfg(feature = "axum")]
mod axum;
mod config;
mod connections;
mod hooks;
pub(crate) mod join;
mod origin;
mod socket;
mod task;
mod upgrade;

#[cfg(feature = "axum")]
pub use self::axum::Endpoint;
pub use self::origin::ForwardedHost;
pub use crate::metrics::{Metrics, MetricsSnapshot};
pub use crate::registry::DuplicateHandler;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use self::config::Config;
use self::connections::Connections;
use self::hooks::ConnectionHook;

use crate::dispatch::Dispatcher;
use crate::groups::History;
use crate::handshake::{Accept, AuthHook, Handshake, Refusal};
use crate::presence::{Identity, Presence};
use crate::type_map::TypeMap;
use crate::{Connection, Groups, Handlers};

/// The default endpoint path, as in the original's routing (`/rohrpost/`).
pub const DEFAULT_PATH: &str = "/rohrpost/";
/// Default largest incoming message: 1 MiB. Larger messages close the connection with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default length of each connection's outbound queue, in pushes (replies not counted).
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Default number of replies that may wait to be written to one client before the server
/// stops reading its requests.
pub const DEFAULT_REPLY_BACKLOG: usize = 1024;
/// Default time a client has to complete the WebSocket handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest WebSocket handshake request head (request line and headers, cookies
/// included) the standalone server reads: 16 KiB. A larger one gets HTTP 431; more than 124
/// headers get HTTP 400. (Mounted in axum, the app's HTTP server sets these limits.)
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Default time running handlers get to finish when the server shuts down.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a closing connection gets to flush its last messages and close frame.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default most connections open at once; more are refused with HTTP 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Default longest a handler may run; then it is dropped and the client gets
/// `"Handler timed out."`.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default silence from a client after which the server sends a WebSocket ping.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(20);
/// Default time a pinged client has to send anything before it is dropped.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Default time a client may leave its outbound queue full (not reading) before it is
/// disconnected with close code 1008.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The operating system's reason.
        source: io::Error,
    },
    /// Two handlers claim the same message type.
    #[error(transparent)]
    DuplicateHandler(#[from] DuplicateHandler),
    /// A setting is out of its range.
    #[error("invalid server setting: {0}")]
    InvalidConfig(String),
}

/// Configures a [`Server`]; every setting has a safe default.
///
/// | setting | default | when a client hits it |
/// | --- | --- | --- |
/// | [`path`](Self::path) | `/rohrpost/` | other paths: HTTP 404 at the handshake |
/// | [`max_message_size`](Self::max_message_size) | 1 MiB | close code 1009 |
/// | [`outbound_queue`](Self::outbound_queue) | 1024 pushes | the push's [`Policy`](crate::groups::Policy): close code 1008 (default), conflation from half of it on, or the oldest volatile push dropped |
/// | [`reply_backlog`](Self::reply_backlog) | 1024 replies | the client's requests are not read until its replies drain; replies are never dropped |
/// | [`write_timeout`](Self::write_timeout) | 10 s | close code 1008 when the client reads nothing that long while messages wait |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | connection dropped; the authentication hook has its own 10 s, then HTTP 503 |
/// | request head ([`MAX_REQUEST_HEAD`]) | 16 KiB | HTTP 431 at the handshake |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 10 s | handlers still running then are dropped |
/// | [`close_timeout`](Self::close_timeout) | 5 s | socket dropped without a close handshake (10 s for a client the server cut off, which gets its queued messages and then the close code and reason) |
/// | [`max_connections`](Self::max_connections) | 100,000 | HTTP 503 at the handshake |
/// | [`allowed_origins`](Self::allowed_origins) | the server's own origin | HTTP 403 at the handshake for a browser page of another origin |
/// | [`authenticate`](Self::authenticate) | none | HTTP 401/403 (or 503) at the handshake |
/// | [`handler_timeout`](Self::handler_timeout) | 30 s | error reply `"Handler timed out."` |
/// | [`handlers_per_connection`](Self::handlers_per_connection) | 1 | reading pauses while that many handlers of the connection run |
/// | [`rate_limit`](Self::rate_limit) | off | error reply `"Rate limit exceeded."` |
/// | [`ping`](Self::ping) | 20 s / 20 s | a client silent after a ping is dropped |
///
/// ```no_run
/// use std::time::Duration;
/// use rohrpost::prelude::*;
///
/// # async fn start() -> Result<(), rohrpost::server::ServerError> {
/// let server = Server::builder()
///     .path("/ws/")
///     .max_message_size(64 * 1024)
///     .shutdown_timeout(Duration::from_secs(30))
///     .bind("127.0.0.1:8000")
///     .await?;
/// server.serve().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `bind` is awaited"]
pub struct ServerBuilder {
    config: Config,
    handlers: Option<Handlers>,
    groups: Option<Groups>,
    history: Option<History>,
    presence: Option<Presence>,
    identity: Identity,
    state: TypeMap,
    authenticate: Option<AuthHook>,
    on_connect: Option<ConnectionHook>,
    on_disconnect: Option<ConnectionHook>,
}

/// A per-connection message rate limit: a token bucket refilled at `per_second`, holding
/// at most `burst` messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages that may arrive at once after a quiet spell.
    pub burst: u32,
}

impl ServerBuilder {
    /// The URL path of the endpoint (default `/rohrpost/`); must start with `/`. The query
    /// string is ignored; any other path is refused at the handshake with HTTP 404.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// The handlers to serve, instead of every `#[rohrpost_handler]` in the program
    /// ([`Handlers::collect`], the default).
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = Some(handlers);
        self
    }

    /// The groups connections join, on the layer of your choice; keep a clone to send to
    /// groups from outside handlers. Default: a fresh [`Groups::memory`].
    pub fn groups(mut self, groups: Groups) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Keeps the pushes of the groups `history` names, so that a client that reconnects
    /// with `since` gets exactly what it missed (see [`History`]). The group layer must
    /// keep history ([`MemoryGroups`](crate::groups::MemoryGroups) does); `bind` fails
    /// otherwise.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rohrpost::groups::History;
    /// use rohrpost::Server;
    ///
    /// # async fn start() -> Result<(), rohrpost::server::ServerError> {
    /// let server = Server::builder()
    ///     .history(History::groups(["todo-*"]).size(100).ttl(Duration::from_secs(300)))
    ///     .bind("127.0.0.1:8000")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn history(mut self, history: History) -> Self {
        self.history = Some(history);
        self
    }

    /// Keeps presence in the groups `presence` names: who is in them, on every node, with
    /// join and leave events for subscribers that ask (see [`presence`](crate::presence)).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rohrpost::presence::Presence;
    /// use rohrpost::Server;
    ///
    /// struct User(String);
    ///
    /// # async fn start() -> Result<(), rohrpost::server::ServerError> {
    /// let server = Server::builder()
    ///     .presence(Presence::groups(["todo-*"]).grace(Duration::from_secs(15)))
    ///     // The user the authentication hook stored, else the connection's own id.
    ///     .presence_id(|conn| match conn.get::<User>() {
    ///         Some(user) => user.0.clone(),
    ///         None => conn.id().to_string(),
    ///     })
    ///     .presence_info(|conn| serde_json::json!({"user": conn.get::<User>().map(|u| u.0.clone())}))
    ///     .bind("127.0.0.1:8000")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// The presence id of a connection, asked when it joins a group with presence (default:
    /// its own id, as text). Connections with one id are one member. Needs
    /// [`presence`](Self::presence).
    pub fn presence_id<F>(mut self, identify: F) -> Self
    where
        F: Fn(&Connection) -> String + Send + Sync + 'static,
    {
        self.identity.id = Some(Arc::new(identify));
        self
    }

    /// The info that travels with a connection's member (a display name, say), asked when it
    /// joins a group with presence (default: `null`). Needs [`presence`](Self::presence).
    pub fn presence_info<F>(mut self, info: F) -> Self
    where
        F: Fn(&Connection) -> serde_json::Value + Send + Sync + 'static,
    {
        self.identity.info = Some(Arc::new(info));
        self
    }

    /// Application state that handlers take as [`State<T>`](crate::State). Call once per
    /// type; a second value of the same type replaces the first.
    pub fn state<T: Send + Sync + 'static>(mut self, state: T) -> Self {
        self.state.insert(state);
        self
    }

    /// The largest incoming message, in bytes (default 1 MiB). A larger message closes the
    /// connection with code 1009 (message too big).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// How many pushes (group messages and a handler's own sends, not replies) may wait to
    /// be written to one client (default 1024). When they fill the queue, the push's
    /// [`Policy`](crate::groups::Policy) decides: by default
    /// [`Connection::try_send`](crate::Connection::try_send) (and so a group send) fails with
    /// [`SendError::QueueFull`](crate::SendError::QueueFull) and the connection is closed with
    /// code 1008; a conflated update replaces the queued update of its object (from half the
    /// queue on); a volatile push drops the oldest queued one.
    /// [`Connection::send`](crate::Connection::send) waits for room, up to the
    /// [`write_timeout`](Self::write_timeout).
    pub fn outbound_queue(mut self, messages: usize) -> Self {
        self.config.outbound_queue = messages;
        self
    }

    /// How many replies may wait to be written to one client before the server stops
    /// reading its requests (default 1024). Replies are never dropped: a client that sends
    /// requests without reading the replies slows itself down, and one that reads nothing
    /// at all is closed at the [`write_timeout`](Self::write_timeout).
    pub fn reply_backlog(mut self, replies: usize) -> Self {
        self.config.reply_backlog = replies;
        self
    }

    /// How long a client has to send its WebSocket handshake request (default 10 s), and,
    /// separately, how long the [`authenticate`](Self::authenticate) hook may take before the
    /// client gets HTTP 503 (counted in
    /// [`MetricsSnapshot::auth_timeouts`](crate::server::MetricsSnapshot)).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long running handlers may take to finish once shutdown begins (default 10 s);
    /// connections still busy then are dropped.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// How long a closing connection may take to flush its last messages and its close
    /// frame (default 5 s) before the socket is dropped. A client the server cut off (too
    /// slow, or breaking the protocol) gets twice as long to read what was queued for it
    /// and the close frame with its code and reason: the frame waits behind that data, and
    /// a client that reads later sees the connection end without a close frame.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// How long a client may go without taking anything from the socket while messages wait
    /// for it (default 10 s). Then it is disconnected with close code 1008 ("outbound queue
    /// full: the client is not reading"); [`Connection::send`](crate::Connection::send) waits at most this long for
    /// room in the queue.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// The most connections open at once (default 100,000); a handshake past it gets HTTP 503
    /// and is counted in [`MetricsSnapshot::refused_capacity`](crate::server::MetricsSnapshot). The
    /// process also needs an open-file limit (`ulimit -n`) above it.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections;
        self
    }

    /// Accepts handshakes from browser pages of these origins too, besides the server's
    /// own: exact (`https://app.example`, `http://localhost:3000`) or every subdomain of a
    /// domain (`https://*.example.com`, not `example.com` itself). Pages of other origins
    /// are refused with HTTP 403: the defense against cross-site WebSocket hijacking, where
    /// another site's page opens a socket that carries the user's cookies. Handshakes
    /// without an `Origin` header (programs, not browsers) are accepted. By default only the
    /// server's own origin passes: the `Origin`'s host and port must be the request's `Host`
    /// (see [`forwarded_host`](Self::forwarded_host) behind a proxy that rewrites it). A
    /// pattern that is not an origin makes `bind` fail.
    ///
    /// ```
    /// let builder = rohrpost::Server::builder()
    ///     .allowed_origins(["https://app.example", "https://*.app.example"]);
    /// ```
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .allowed_origins
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// Accepts handshakes from pages of any origin: the explicit opt-out of the origin
    /// check, for an endpoint that authenticates by tokens the page sends itself, never by
    /// cookies. A warning is logged when an [`authenticate`](Self::authenticate) hook reads
    /// a cookie meanwhile.
    pub fn allow_any_origin(mut self) -> Self {
        self.config.any_origin = true;
        self
    }

    /// Behind a proxy that rewrites `Host`, the header that carries the public host the
    /// origin check compares with (off by default: the headers are trusted only when you
    /// say that the proxy sets them).
    ///
    /// ```
    /// use rohrpost::server::ForwardedHost;
    ///
    /// let builder = rohrpost::Server::builder().forwarded_host(ForwardedHost::XForwardedHost);
    /// ```
    pub fn forwarded_host(mut self, header: ForwardedHost) -> Self {
        self.config.forwarded_host = Some(header);
        self
    }

    /// Decides on every handshake (after the path, capacity and origin checks), seeing its
    /// headers, query and cookies: accept, with per-connection state, or refuse with
    /// 401/403 (or 503 when the credentials cannot be checked now). The hook is async, so it
    /// can ask a database or a session store; a hook still running after the
    /// [`handshake_timeout`](Self::handshake_timeout) is dropped and the client gets HTTP 503.
    /// Each handshake runs in its own task: a slow hook delays only its own client.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::Arc;
    /// use rohrpost::handshake::{Accept, Refusal};
    /// use rohrpost::Server;
    ///
    /// struct User(String);
    ///
    /// // Stands in for a session store or a database pool.
    /// let sessions = Arc::new(HashMap::from([("s3cret".to_owned(), "ada".to_owned())]));
    /// let builder = Server::builder().authenticate(move |handshake| {
    ///     let sessions = sessions.clone();
    ///     async move {
    ///         let token = handshake
    ///             .query("token")
    ///             .ok_or_else(|| Refusal::unauthorized("a token is required"))?;
    ///         match sessions.get(&*token) {
    ///             Some(name) => Ok(Accept::new().with(User(name.clone()))),
    ///             None => Err(Refusal::forbidden("unknown token")),
    ///         }
    ///     }
    /// });
    /// ```
    pub fn authenticate<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Accept, Refusal>> + Send + 'static,
    {
        self.authenticate = Some(AuthHook::new(hook));
        self
    }

    /// Runs `hook` for every new connection, after its handshake and before its first
    /// message is read: it may join groups and send (what it sends goes out first). The
    /// handshake's state is on the connection ([`Connection::get`](crate::Connection::get)).
    /// Bounded by the [`handler_timeout`](Self::handler_timeout); a hook that panics or
    /// runs over is logged.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// struct User(String);
    ///
    /// let builder = Server::builder().on_connect(|conn: Connection| async move {
    ///     let Some(user) = conn.get::<User>() else { return };
    ///     // Every connection of a user is in the user's group: a direct message reaches
    ///     // them all, even one that has sent nothing yet.
    ///     let _ = conn.join(&format!("user-{}", user.0)).await;
    ///     if let Ok(welcome) = Message::push("welcome", &json!({"user": user.0})) {
    ///         let _ = conn.send(welcome).await;
    ///     }
    /// });
    /// ```
    pub fn on_connect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(ConnectionHook::new("on_connect", hook));
        self
    }

    /// Runs `hook` when a connection has ended, however it ended (the client left, a
    /// timeout, a slow consumer, a shutdown), while it is still a member of its groups:
    /// [`Connection::groups`](crate::Connection::groups) lists them, and a message to them
    /// can leave it out with [`Groups::send_except`]. It can no longer send. Bounded by the
    /// [`handler_timeout`](Self::handler_timeout).
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// let builder = Server::builder().on_disconnect(|conn: Connection| async move {
    ///     for room in conn.groups() {
    ///         if let Ok(left) = Message::push("left", &json!({"room": room})) {
    ///             let _ = conn.server_groups().send_except(&room, &left, &conn).await;
    ///         }
    ///     }
    /// });
    /// ```
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(ConnectionHook::new("on_disconnect", hook));
        self
    }

    /// The longest a handler may run (default 30 s): then it is dropped, the client gets
    /// `{"id", "type", "error": "Handler timed out."}`, and the connection goes on.
    ///
    /// ```
    /// let builder = rohrpost::Server::builder().handler_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn handler_timeout(mut self, timeout: Duration) -> Self {
        self.config.handler_timeout = timeout;
        self
    }

    /// How many handlers of one connection may run at once (default 1).
    ///
    /// With 1, as in the original, a connection's messages are handled one after another
    /// and replies come in request order. With more, a slow handler (a database write, say)
    /// no longer holds up the connection's other messages: up to `handlers` run at once,
    /// each reply goes out when its handler finishes (clients match replies by `id`), and
    /// the connection's socket is not read while all are busy, so a client cannot pile up
    /// work. At shutdown, or when the client leaves, running handlers finish first (each
    /// within the [`handler_timeout`](Self::handler_timeout)); a connection the server
    /// stops at once (a handler's `close`, a protocol error, a client that does not read or
    /// answer pings) drops its running handlers. Zero is refused by `bind`.
    ///
    /// ```
    /// let builder = rohrpost::Server::builder().handlers_per_connection(8);
    /// ```
    pub fn handlers_per_connection(mut self, handlers: usize) -> Self {
        self.config.handlers_per_connection = handlers;
        self
    }

    /// Limits each connection to `per_second` messages, sustained, with bursts of `burst`
    /// (off by default). A message over the limit is not handled; it gets
    /// `{"id", "type", "error": "Rate limit exceeded."}` and the connection goes on.
    ///
    /// ```
    /// // 20 messages a second per connection, sustained; bursts of up to 50.
    /// let builder = rohrpost::Server::builder().rate_limit(20.0, 50);
    /// ```
    pub fn rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.config.rate_limit = Some(RateLimit { per_second, burst });
        self
    }

    /// Server-side liveness: after `interval` (to twice that: silence is checked once per
    /// interval, not per message) without a frame from the client the server sends a
    /// WebSocket ping, and a client that sends nothing for `timeout` after it is dropped
    /// (and leaves its groups). Defaults: 20 s and 20 s.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// // Mobile clients behind NATs that drop idle flows after 30 s: look every 10 s.
    /// let builder = rohrpost::Server::builder().ping(Duration::from_secs(10), Duration::from_secs(15));
    /// ```
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.config.ping_interval = interval;
        self.config.ping_timeout = timeout;
        self
    }

    /// Checks the settings and the handlers, and opens the listening socket. Use port 0 for
    /// a free port and read it back with [`Server::local_addr`].
    pub async fn bind(
        self,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<Server, ServerError> {
        let shared = self.build()?;
        let failed = |source| ServerError::Bind {
            addr: format!("{addr:?}").trim_matches('"').to_owned(),
            source,
        };
        let listener = TcpListener::bind(&addr).await.map_err(failed)?;
        let local_addr = listener.local_addr().map_err(failed)?;
        Ok(Server {
            listener,
            local_addr,
            shared,
        })
    }

    /// Checks the settings and the handlers; what every connection of the server shares.
    fn build(self) -> Result<Arc<Shared>, ServerError> {
        self.config.validate()?;
        let origins = self.config.origin_policy()?;
        let handlers = self.handlers.unwrap_or_else(Handlers::collect);
        handlers.check()?;
        let groups = self.groups.unwrap_or_default();
        if let Some(history) = self.history {
            groups
                .configure_history(history)
                .map_err(|error| ServerError::InvalidConfig(error.to_string()))?;
        }
        match self.presence {
            Some(presence) => groups
                .configure_presence(presence, self.identity.id, self.identity.info)
                .map_err(|error| ServerError::InvalidConfig(error.to_string()))?,
            None if self.identity.id.is_some() || self.identity.info.is_some() => {
                return Err(ServerError::InvalidConfig(
                    "presence_id and presence_info need presence: add ServerBuilder::presence"
                        .into(),
                ))
            }
            None => {}
        }
        let metrics = Metrics::default();
        Ok(Arc::new(Shared {
            dispatcher: Dispatcher::new(
                handlers,
                self.state,
                metrics.clone(),
                self.config.handler_timeout,
            ),
            metrics,
            authenticate: self.authenticate,
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            groups,
            websocket: self.config.websocket(),
            connections: Connections::default(),
            origins,
            config: self.config,
        }))
    }
}

/// A rohrpost server bound to its address, ready to [`serve`](Server::serve).
///
/// ```no_run
/// use rohrpost::prelude::*;
///
/// #[rohrpost_handler("echo")]
/// async fn echo(req: Request) -> Option<Value> {
///     req.data
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), rohrpost::server::ServerError> {
///     let server = Server::bind("127.0.0.1:8000").await?;
///     println!("listening on {}", server.url());
///     server.serve().await; // until Ctrl-C or SIGTERM
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

/// What every connection of a server (or an endpoint) shares.
#[derive(Debug)]
struct Shared {
    config: Config,
    origins: origin::OriginPolicy,
    connections: Connections,
    dispatcher: Dispatcher,
    metrics: Metrics,
    authenticate: Option<AuthHook>,
    on_connect: Option<ConnectionHook>,
    on_disconnect: Option<ConnectionHook>,
    groups: Groups,
    websocket: WebSocketConfig,
}

impl Shared {
    /// Serves one connection in a task of its own, tracked for the shutdown.
    fn spawn(self: &Arc<Self>, task: impl Future<Output = ()> + Send + 'static) {
        self.connections.spawn(task);
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

impl Server {
    /// A builder with the default settings.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server with the default settings and every `#[rohrpost_handler]`, bound to `addr`.
    pub async fn bind(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<Server, ServerError> {
        Self::builder().bind(addr).await
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's groups: clone it to send to groups from anywhere.
    pub fn groups(&self) -> &Groups {
        &self.shared.groups
    }

    /// The server's counters (connections, refusals, handler failures…); clone it before
    /// serving to read them while the server runs.
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// The endpoint's URL, e.g. `ws://127.0.0.1:8000/rohrpost/`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.local_addr, self.shared.config.path)
    }

    /// Serves in a task of its own, until [`RunningServer::shutdown`] (or until the handle
    /// is dropped): for tests, and for apps that serve beside other work.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let running = Server::bind("127.0.0.1:0").await?.spawn();
    /// assert!(running.url().starts_with("ws://127.0.0.1:"));
    /// // … connect clients to running.url() …
    /// running.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn spawn(self) -> RunningServer {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = self.url();
        let local_addr = self.local_addr;
        let groups = self.shared.groups.clone();
        let metrics = self.metrics();
        let task = tokio::spawn(self.serve_until(async move {
            let _ = stopped.await;
        }));
        RunningServer {
            url,
            local_addr,
            groups,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully (see
    /// [`serve_until`](Self::serve_until)).
    pub async fn serve(self) {
        self.serve_until(shutdown_signal()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops accepting, lets
    /// running handlers finish and their replies go out, closes every connection with code
    /// 1001, and drops what is still running after the shutdown timeout.
    pub async fn serve_until(self, signal: impl Future<Output = ()>) {
        let Server {
            listener,
            local_addr,
            shared,
        } = self;
        tracing::info!(addr = %local_addr, path = %shared.config.path, "rohrpost server listening");
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        shared.spawn(socket::serve_connection(stream, peer, shared.clone()));
                    }
                    Err(error) => {
                        // Typically out of file descriptors: wait rather than spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        shared
            .connections
            .shut_down(shared.config.shutdown_timeout)
            .await;
        tracing::info!("rohrpost server stopped");
    }
}

/// A server serving in its own task ([`Server::spawn`]); dropping it begins the shutdown.
#[derive(Debug)]
pub struct RunningServer {
    url: String,
    local_addr: SocketAddr,
    groups: Groups,
    metrics: Metrics,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// The endpoint's URL, e.g. `ws://127.0.0.1:8000/rohrpost/`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// The server's counters.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Shuts the server down gracefully (see [`Server::serve_until`]) and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            if let Err(error) = task.await {
                tracing::error!(%error, "the server task failed");
            }
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Completes on Ctrl-C, or on SIGTERM on Unix: the usual signals to stop a server.
///
/// ```no_run
/// use rohrpost::prelude::*;
/// use rohrpost::server::shutdown_signal;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let server = Server::bind("127.0.0.1:8000").await?;
/// server
///     .serve_until(async {
///         shutdown_signal().await;
///         tracing::info!("stopping: draining connections");
///     })
///     .await;
/// // Every connection is closed now: flush what the app keeps, then exit.
/// # Ok(()) }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
