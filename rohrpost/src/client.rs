//! A rohrpost client (cargo feature `client`): what rohrpost.js does, for services, tests,
//! bots and load generators.
//!
//! ```no_run
//! use rohrpost::client::Client;
//! use rohrpost::subscribe::GroupObject;
//! use serde::Deserialize;
//! use serde_json::json;
//!
//! #[derive(Debug, Deserialize)]
//! struct Todo { id: i64, title: String }
//!
//! # async fn run() -> Result<(), rohrpost::client::ClientError> {
//! let client = Client::builder("ws://127.0.0.1:8000/rohrpost/")
//!     .token("hunter2")
//!     .connect()
//!     .await?;
//! let todo: Todo = client.call_as("todo.create", json!({"title": "milk"})).await?;
//! let mut changes = client
//!     .subscribe::<Todo>(GroupObject { object_type: "todo".into(), id: json!(todo.id) })
//!     .await?;
//! while let Some(update) = changes.next().await {
//!     println!("{:?}", update?);
//! }
//! # Ok(()) }
//! ```
//!
//! - Calls are matched to replies by id, any number in flight; each fails with the reply's
//!   `error`, after the call timeout, or when the connection drops while it waits.
//! - A `ping` goes out every ping interval; when nothing came back within an interval of
//!   it, the connection counts as dead (as rohrpost.js): the client reconnects with backoff
//!   (100 ms doubling to 5 s by default, where rohrpost.js waits a fixed 3 s),
//!   re-subscribes every group, and re-sends subscribe requests that were waiting. Calls
//!   made while reconnecting wait for the connection (within their timeout; up to 10,000).
//! - `wss://` with the `client-tls` feature (rustls, trusting the Mozilla roots of
//!   webpki-roots; [`ClientBuilder::tls_config`] for a private CA or client certificates).
//! - [`Client::state`] tells whether it is connected, reconnecting or closed.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::backoff::Backoff;
use crate::notify::Change;
use crate::subscribe::GroupObject;

/// The rustls version the client uses, to build a [`ClientBuilder::tls_config`] with.
#[cfg(feature = "client-tls")]
pub use rustls;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ClientError {
    /// The server answered with an error reply.
    #[error("the server replied with an error: {error}")]
    Reply {
        /// The reply's `error`.
        error: Value,
        /// The reply's `data`, if any.
        data: Option<Value>,
    },
    /// No reply came within the call timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection dropped while the call waited for its reply.
    #[error("the connection dropped before the reply arrived")]
    Disconnected,
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// The first connection could not be made.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A reply or update did not decode into the requested type.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// serde's reason.
        reason: String,
    },
    /// The data given to send could not be turned into JSON (a map with non-string keys,
    /// say, or a `Serialize` impl that fails).
    #[error("cannot encode the data to send as JSON: {reason}")]
    Encode {
        /// serde's reason.
        reason: String,
    },
}

/// The connection's state, for UIs and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected; calls go out at once.
    Connected,
    /// The connection dropped; reconnecting (attempt number since the drop).
    Reconnecting {
        /// Attempts made since the connection dropped.
        attempt: u32,
    },
    /// Closed by [`Client::close`]; nothing more will happen.
    Closed,
}

/// Durations shorter than this are raised to it: a zero ping interval or backoff would
/// spin.
const MIN_DURATION: Duration = Duration::from_millis(10);

/// Settings of a [`Client`]; every one has rohrpost.js's default or a safe one.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    ping_interval: Duration,
    call_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    #[cfg(feature = "client-tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// The token sent as `auth_jwt` beside `data` in every message, as rohrpost.js does.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// How often to ping, and how long a silence counts as a dead connection (default 5 s,
    /// as rohrpost.js).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(MIN_DURATION);
        self
    }

    /// How long a call waits for its reply (default 10 s).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout.max(MIN_DURATION);
        self
    }

    /// The wait before reconnecting: `min` after a drop, doubling up to `max` while attempts
    /// fail (default 100 ms to 5 s).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(MIN_DURATION);
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// The TLS settings for `wss://` URLs (feature `client-tls`): your own root
    /// certificates (a private CA), client certificates, or protocol versions. Default:
    /// rustls with the ring provider, trusting the Mozilla roots of webpki-roots.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use rohrpost::client::{rustls, Client};
    ///
    /// # async fn run(ca_der: Vec<u8>) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut roots = rustls::RootCertStore::empty();
    /// roots.add(ca_der.into())?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let client = Client::builder("wss://internal.example/rohrpost/")
    ///     .tls_config(Arc::new(config))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "client-tls")]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects; fails if the first connection cannot be made. Later drops reconnect.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let settings = self.with_default_tls()?;
        let socket = open(&settings).await?;
        let (commands, requests) = mpsc::unbounded_channel();
        let (report, state) = watch::channel(ConnectionState::Connected);
        let next_id = Arc::new(AtomicU64::new(1));
        let driver = Driver {
            settings: settings.clone(),
            requests,
            report,
            calls: HashMap::new(),
            groups: HashMap::new(),
            pending_subscribes: HashMap::new(),
            resubscribing: HashMap::new(),
            waiting: Vec::new(),
            incoming: None,
            next_id: next_id.clone(),
        };
        tokio::spawn(driver.run(socket));
        Ok(Client {
            shared: Arc::new(Shared {
                commands,
                state,
                next_id,
                call_timeout: settings.call_timeout,
            }),
        })
    }

    /// Fills in the default TLS settings for a `wss://` URL without its own.
    #[cfg(feature = "client-tls")]
    fn with_default_tls(mut self) -> Result<Self, ClientError> {
        if self.tls.is_none() && is_wss(&self.url) {
            self.tls = Some(default_tls_config().map_err(|error| ClientError::Connect {
                url: self.url.clone(),
                reason: format!("cannot set up TLS: {error}"),
            })?);
        }
        Ok(self)
    }

    #[cfg(not(feature = "client-tls"))]
    fn with_default_tls(self) -> Result<Self, ClientError> {
        Ok(self)
    }
}

/// A rohrpost client: cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ConnectionState>,
    next_id: Arc<AtomicU64>,
    call_timeout: Duration,
}

enum Command {
    Call {
        id: u64,
        message_type: String,
        data: Option<Value>,
        reply: oneshot::Sender<Result<Value, ClientError>>,
    },
    Send {
        message_type: String,
        data: Option<Value>,
    },
    Subscribe {
        id: u64,
        object: GroupObject,
        updates: mpsc::UnboundedSender<Value>,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Unsubscribe {
        key: u64,
        group: String,
    },
    Incoming(mpsc::UnboundedSender<Value>),
    Close,
}

impl Client {
    /// Settings for a client of the endpoint at `url` (`ws://host:port/rohrpost/`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            ping_interval: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            #[cfg(feature = "client-tls")]
            tls: None,
        }
    }

    /// Connects with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Client, ClientError> {
        Self::builder(url).connect().await
    }

    /// Sends `{"id", "type", "data"}` and resolves with the reply's `data` (`null` when it
    /// has none), or fails with its `error`, a timeout, or a dropped connection.
    pub async fn call(
        &self,
        message_type: &str,
        data: impl Serialize,
    ) -> Result<Value, ClientError> {
        let data = to_data(data)?;
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, replied) = oneshot::channel();
        self.command(Command::Call {
            id,
            message_type: message_type.to_owned(),
            data,
            reply,
        })?;
        let timeout = self.shared.call_timeout;
        match tokio::time::timeout(timeout, replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout(timeout)),
        }
    }

    /// Like [`call`](Self::call), decoding the reply's `data` into `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        message_type: &str,
        data: impl Serialize,
    ) -> Result<T, ClientError> {
        let value = self.call(message_type, data).await?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode {
            what: "the reply's data",
            reason: e.to_string(),
        })
    }

    /// Sends a message without waiting for a reply (dropped while reconnecting, like
    /// rohrpost.js does).
    pub fn send(&self, message_type: &str, data: impl Serialize) -> Result<(), ClientError> {
        let data = to_data(data)?;
        self.command(Command::Send {
            message_type: message_type.to_owned(),
            data,
        })
    }

    /// Subscribes to `object`'s group; resolves with the subscription once the server
    /// confirmed it (the group name is [`Subscription::group`]). Updates decode their
    /// `object` into `T` (use `Value` to take them as they are).
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        object: GroupObject,
    ) -> Result<Subscription<T>, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (updates, received) = mpsc::unbounded_channel();
        let (reply, replied) = oneshot::channel();
        self.command(Command::Subscribe {
            id,
            object,
            updates,
            reply,
        })?;
        let timeout = self.shared.call_timeout;
        let group = match tokio::time::timeout(timeout, replied).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(ClientError::Closed),
            Err(_) => return Err(ClientError::Timeout(timeout)),
        };
        Ok(Subscription {
            key: id,
            group,
            updates: received,
            client: self.clone(),
            kind: PhantomData,
        })
    }

    /// Every message that is neither a reply to a call nor a subscription update (for
    /// messages a server pushes on its own). Calling it again replaces the earlier stream.
    pub fn incoming(&self) -> mpsc::UnboundedReceiver<Value> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = self.command(Command::Incoming(sender));
        receiver
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    /// A watch of the connection's state, to follow its changes.
    pub fn state_changes(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }

    /// Closes the connection for good: waiting calls fail with [`ClientError::Closed`] and
    /// subscriptions end.
    pub async fn close(&self) {
        let _ = self.command(Command::Close);
        let mut state = self.shared.state.clone();
        let _ = state.wait_for(|s| *s == ConnectionState::Closed).await;
    }

    fn command(&self, command: Command) -> Result<(), ClientError> {
        self.shared
            .commands
            .send(command)
            .map_err(|_| ClientError::Closed)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

fn to_data(data: impl Serialize) -> Result<Option<Value>, ClientError> {
    let value = serde_json::to_value(data).map_err(|e| ClientError::Encode {
        reason: e.to_string(),
    })?;
    Ok((!value.is_null()).then_some(value))
}

/// One change pushed to a subscribed group.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<T> {
    /// Created, updated or deleted.
    pub change: Change,
    /// The group it was sent to.
    pub group: String,
    /// The pushed object.
    pub object: T,
}

/// The updates of one subscribed group, in order.
pub struct Subscription<T> {
    key: u64,
    group: String,
    updates: mpsc::UnboundedReceiver<Value>,
    client: Client,
    kind: PhantomData<fn() -> T>,
}

#[derive(Deserialize)]
struct UpdateData {
    #[serde(rename = "type")]
    change: String,
    group: String,
    object: Value,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The group's name, as the server confirmed it.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next update; `None` once the client is closed or the group unsubscribed.
    pub async fn next(&mut self) -> Option<Result<Update<T>, ClientError>> {
        let data = self.updates.recv().await?;
        Some(decode_update(data))
    }

    /// Unsubscribes (when offline, the group is just forgotten). Dropping the
    /// subscription does the same.
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let _ = self.client.command(Command::Unsubscribe {
            key: self.key,
            group: self.group.clone(),
        });
    }
}

fn decode_update<T: DeserializeOwned>(data: Value) -> Result<Update<T>, ClientError> {
    let decode = |reason: String| ClientError::Decode {
        what: "a subscription update",
        reason,
    };
    let update: UpdateData = serde_json::from_value(data).map_err(|e| decode(e.to_string()))?;
    let change = match update.change.as_str() {
        "create" => Change::Create,
        "update" => Change::Update,
        "delete" => Change::Delete,
        other => return Err(decode(format!("unknown change type {other:?}"))),
    };
    let object = serde_json::from_value(update.object).map_err(|e| decode(e.to_string()))?;
    Ok(Update {
        change,
        group: update.group,
        object,
    })
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a connection to the settings' URL, within the call timeout, with Nagle's algorithm
/// off (requests are small and want their reply at once).
async fn open(settings: &ClientBuilder) -> Result<Socket, ClientError> {
    let (url, timeout) = (settings.url.as_str(), settings.call_timeout);
    let failed = |reason: String| ClientError::Connect {
        url: url.to_owned(),
        reason,
    };
    #[cfg(feature = "client-tls")]
    let connecting = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        settings
            .tls
            .clone()
            .map(tokio_tungstenite::Connector::Rustls),
    );
    #[cfg(not(feature = "client-tls"))]
    let connecting = {
        if is_wss(url) {
            return Err(failed(
                "wss:// needs rohrpost's `client-tls` cargo feature".to_owned(),
            ));
        }
        tokio_tungstenite::connect_async_with_config(url, None, true)
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(error)) => Err(failed(error.to_string())),
        Err(_) => Err(failed(format!("no handshake within {timeout:?}"))),
    }
}

fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
}

/// rustls with the ring provider and the Mozilla roots: the provider is named, so that an
/// application with another provider compiled in does not make rustls guess (and panic).
#[cfg(feature = "client-tls")]
fn default_tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A subscribe request that waits for its reply.
struct PendingSubscribe {
    object: GroupObject,
    updates: mpsc::UnboundedSender<Value>,
    reply: oneshot::Sender<Result<String, ClientError>>,
}

/// A confirmed group and the subscriptions that receive its updates.
struct Group {
    object: GroupObject,
    subscribers: HashMap<u64, mpsc::UnboundedSender<Value>>,
}

/// The task that owns the socket: sends, matches replies, pings, reconnects.
struct Driver {
    settings: ClientBuilder,
    requests: mpsc::UnboundedReceiver<Command>,
    report: watch::Sender<ConnectionState>,
    calls: HashMap<u64, oneshot::Sender<Result<Value, ClientError>>>,
    /// Confirmed groups: re-subscribed after every reconnection, and receiving updates
    /// meanwhile.
    groups: HashMap<String, Group>,
    /// Subscribe requests by id (the subscription's key) waiting for their reply.
    pending_subscribes: HashMap<u64, PendingSubscribe>,
    /// Re-subscriptions after a reconnection, by request id.
    resubscribing: HashMap<u64, String>,
    /// Calls and subscribes made while offline, sent once connected.
    waiting: Vec<Command>,
    incoming: Option<mpsc::UnboundedSender<Value>>,
    /// The request ids, shared with the callers: the driver's own pings and
    /// re-subscriptions take theirs from the same counter, so no two requests share an id.
    next_id: Arc<AtomicU64>,
}

/// The most commands kept while offline; more fail at once with `Disconnected`.
const MAX_WAITING: usize = 10_000;

/// Why a connection ended.
enum Ended {
    Dropped,
    Closed,
}

impl Driver {
    async fn run(mut self, mut socket: Socket) {
        loop {
            match self.serve(&mut socket).await {
                Ended::Closed => {
                    let _ =
                        tokio::time::timeout(self.settings.call_timeout, socket.close(None)).await;
                    self.shut_down();
                    return;
                }
                Ended::Dropped => {
                    tracing::debug!("rohrpost connection dropped; reconnecting");
                    for (_, call) in self.calls.drain() {
                        let _ = call.send(Err(ClientError::Disconnected));
                    }
                    self.resubscribing.clear();
                    match self.reconnect().await {
                        Some(fresh) => socket = fresh,
                        None => {
                            self.shut_down();
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits out the backoff between attempts, following commands meanwhile; `None` when
    /// the client was closed.
    async fn reconnect(&mut self) -> Option<Socket> {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.set_state(ConnectionState::Reconnecting { attempt });
            let pause = tokio::time::sleep(backoff.next_wait());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    command = self.requests.recv() => match command {
                        None | Some(Command::Close) => return None,
                        Some(command) => self.offline(command),
                    },
                }
            }
            let settings = self.settings.clone();
            let opening = async move { open(&settings).await };
            tokio::pin!(opening);
            loop {
                tokio::select! {
                    opened = &mut opening => match opened {
                        Ok(socket) => return Some(socket),
                        Err(_) => break,
                    },
                    command = self.requests.recv() => match command {
                        None | Some(Command::Close) => return None,
                        Some(command) => self.offline(command),
                    },
                }
            }
        }
    }

    /// A command while offline: calls and subscribes wait, unsubscribes forget.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Unsubscribe { key, group } => {
                self.forget(key, &group);
            }
            Command::Incoming(sender) => self.incoming = Some(sender),
            Command::Send { .. } | Command::Close => {}
            Command::Call { reply, .. } if self.waiting.len() >= MAX_WAITING => {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
            Command::Subscribe { reply, .. } if self.waiting.len() >= MAX_WAITING => {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
            other => self.waiting.push(other),
        }
    }

    /// Drops subscription `key` wherever it is; returns whether its group has no
    /// subscription left (and so should be unsubscribed on the server).
    fn forget(&mut self, key: u64, group: &str) -> bool {
        self.pending_subscribes.remove(&key);
        self.waiting
            .retain(|command| !matches!(command, Command::Subscribe { id, .. } if *id == key));
        let Some(members) = self.groups.get_mut(group) else {
            return false;
        };
        members.subscribers.remove(&key);
        if members.subscribers.is_empty() {
            self.groups.remove(group);
            return true;
        }
        false
    }

    fn shut_down(&mut self) {
        for (_, call) in self.calls.drain() {
            let _ = call.send(Err(ClientError::Closed));
        }
        for (_, pending) in self.pending_subscribes.drain() {
            let _ = pending.reply.send(Err(ClientError::Closed));
        }
        for command in self.waiting.drain(..) {
            match command {
                Command::Call { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                _ => {}
            }
        }
        self.groups.clear();
        self.set_state(ConnectionState::Closed);
    }

    /// Publishes the state, waking watchers only when it changed.
    fn set_state(&self, state: ConnectionState) {
        self.report.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }

    fn own_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn frame(&self, id: u64, message_type: &str, data: Option<Value>) -> Frame {
        let mut message = Map::new();
        message.insert("id".into(), id.into());
        message.insert("type".into(), message_type.into());
        if let Some(data) = data {
            message.insert("data".into(), data);
        }
        if let Some(token) = &self.settings.token {
            message.insert("auth_jwt".into(), token.clone().into());
        }
        Frame::Text(Value::Object(message).to_string().into())
    }

    /// Sends one frame, bounded by the call timeout (a server that stops reading).
    async fn write(&self, socket: &mut Socket, frame: Frame) -> Result<(), ()> {
        match tokio::time::timeout(self.settings.call_timeout, socket.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn serve(&mut self, socket: &mut Socket) -> Ended {
        self.set_state(ConnectionState::Connected);
        // Re-subscribe the confirmed groups (their updates keep flowing meanwhile), and
        // re-send the subscribes that were waiting for a reply.
        let groups: Vec<(String, GroupObject)> = self
            .groups
            .iter()
            .map(|(name, group)| (name.clone(), group.object.clone()))
            .collect();
        for (name, object) in groups {
            let id = self.own_id();
            self.resubscribing.insert(id, name);
            let frame = self.frame(id, "subscribe", serde_json::to_value(&object).ok());
            if self.write(socket, frame).await.is_err() {
                return Ended::Dropped;
            }
        }
        let pending: Vec<_> = self.pending_subscribes.drain().collect();
        for (id, pending) in pending {
            self.waiting.push(Command::Subscribe {
                id,
                object: pending.object,
                updates: pending.updates,
                reply: pending.reply,
            });
        }
        let mut queue = std::mem::take(&mut self.waiting).into_iter();
        while let Some(command) = queue.next() {
            if command_abandoned(&command) {
                continue;
            }
            if self.online(socket, command).await.is_err() {
                // What was not sent yet waits for the next connection.
                self.waiting.extend(queue);
                return Ended::Dropped;
            }
        }
        let interval = self.settings.ping_interval;
        let mut last_heard = Instant::now();
        let mut last_ping: Option<Instant> = None;
        let ping_timer = tokio::time::sleep(interval);
        tokio::pin!(ping_timer);
        loop {
            tokio::select! {
                command = self.requests.recv() => match command {
                    None | Some(Command::Close) => return Ended::Closed,
                    Some(command) => {
                        if self.online(socket, command).await.is_err() {
                            return Ended::Dropped;
                        }
                    }
                },
                frame = socket.next() => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        last_heard = Instant::now();
                        self.receive(&text);
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                    Some(Err(_)) | None => return Ended::Dropped,
                },
                _ = &mut ping_timer => {
                    // As rohrpost.js: nothing came back within an interval of the last ping.
                    if last_ping.is_some_and(|sent| last_heard < sent) {
                        return Ended::Dropped;
                    }
                    self.sweep();
                    let id = self.own_id();
                    let ping = self.frame(id, "ping", None);
                    last_ping = Some(Instant::now());
                    if self.write(socket, ping).await.is_err() {
                        return Ended::Dropped;
                    }
                    ping_timer.as_mut().reset(Instant::now() + interval);
                }
            }
        }
    }

    /// Forgets what nobody waits for any more: calls and subscribes whose caller gave up.
    fn sweep(&mut self) {
        self.calls.retain(|_, call| !call.is_closed());
        self.pending_subscribes
            .retain(|_, pending| !pending.reply.is_closed() || !pending.updates.is_closed());
    }

    async fn online(&mut self, socket: &mut Socket, command: Command) -> Result<(), ()> {
        match command {
            Command::Call {
                id,
                message_type,
                data,
                reply,
            } => {
                let frame = self.frame(id, &message_type, data);
                self.calls.insert(id, reply);
                self.write(socket, frame).await?;
            }
            Command::Send { message_type, data } => {
                let id = self.own_id();
                let frame = self.frame(id, &message_type, data);
                self.write(socket, frame).await?;
            }
            Command::Subscribe {
                id,
                object,
                updates,
                reply,
            } => {
                let data = serde_json::to_value(&object).ok();
                let frame = self.frame(id, "subscribe", data);
                self.pending_subscribes.insert(
                    id,
                    PendingSubscribe {
                        object,
                        updates,
                        reply,
                    },
                );
                self.write(socket, frame).await?;
            }
            Command::Unsubscribe { key, group } => {
                let object = self.groups.get(&group).map(|g| g.object.clone());
                if self.forget(key, &group) {
                    let id = self.own_id();
                    let data = object.and_then(|o| serde_json::to_value(o).ok());
                    let frame = self.frame(id, "unsubscribe", data);
                    self.write(socket, frame).await?;
                }
            }
            Command::Incoming(sender) => self.incoming = Some(sender),
            Command::Close => {}
        }
        Ok(())
    }

    /// Routes one message: a group update, a call's reply, a subscribe's reply, or other.
    fn receive(&mut self, text: &str) {
        let Ok(Value::Object(mut message)) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(
                message = text,
                "the server sent something that is not a JSON object"
            );
            return;
        };
        let id = message.get("id").and_then(Value::as_u64);
        let message_type = message.get("type").and_then(Value::as_str);
        if message_type == Some("subscription-update") {
            let data = message.remove("data").unwrap_or(Value::Null);
            self.deliver(data);
            return;
        }
        if let Some(call) = id.and_then(|id| self.calls.remove(&id)) {
            let _ = call.send(outcome(&mut message));
            return;
        }
        if let Some(pending) = id.and_then(|id| self.pending_subscribes.remove(&id)) {
            self.confirm(id.unwrap_or_default(), pending, outcome(&mut message));
            return;
        }
        if let Some(group) = id.and_then(|id| self.resubscribing.remove(&id)) {
            if let Err(error) = outcome(&mut message) {
                tracing::warn!(%group, %error, "re-subscribing after a reconnection was refused; the group's subscriptions end");
                self.groups.remove(&group);
            }
            return;
        }
        if matches!(message_type, Some("pong" | "unsubscribe")) {
            return;
        }
        let message = Value::Object(message);
        match &self.incoming {
            Some(incoming) => {
                let _ = incoming.send(message);
            }
            None => tracing::debug!(%message, "unrouted message from the server"),
        }
    }

    /// Sends an update to the group's subscriptions, and to subscribes of that group still
    /// waiting for their reply (the server joins before it replies).
    fn deliver(&self, data: Value) {
        let group = data
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(members) = self.groups.get(group) {
            for updates in members.subscribers.values() {
                let _ = updates.send(data.clone());
            }
        }
        for pending in self.pending_subscribes.values() {
            if pending.object.group_name() == group {
                let _ = pending.updates.send(data.clone());
            }
        }
    }

    fn confirm(
        &mut self,
        key: u64,
        pending: PendingSubscribe,
        outcome: Result<Value, ClientError>,
    ) {
        match outcome {
            Ok(data) => {
                let group = data
                    .get("group")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| pending.object.group_name());
                self.groups
                    .entry(group.clone())
                    .or_insert_with(|| Group {
                        object: pending.object,
                        subscribers: HashMap::new(),
                    })
                    .subscribers
                    .insert(key, pending.updates);
                let _ = pending.reply.send(Ok(group));
            }
            Err(error) => {
                let _ = pending.reply.send(Err(error));
            }
        }
    }
}

/// Whether the caller of a waiting command already gave up (its call timed out).
fn command_abandoned(command: &Command) -> bool {
    match command {
        Command::Call { reply, .. } => reply.is_closed(),
        Command::Subscribe { reply, updates, .. } => reply.is_closed() && updates.is_closed(),
        _ => false,
    }
}

/// A reply's `data`, or its `error` as an error.
fn outcome(message: &mut Map<String, Value>) -> Result<Value, ClientError> {
    match message.remove("error") {
        Some(error) => Err(ClientError::Reply {
            error,
            data: message.remove("data"),
        }),
        None => Ok(message.remove("data").unwrap_or(Value::Null)),
    }
}

/// `{"type": …, "id": …}`, for [`Client::subscribe`].
pub fn group_object(object_type: &str, id: impl Serialize) -> GroupObject {
    GroupObject {
        object_type: object_type.to_owned(),
        id: serde_json::to_value(id).unwrap_or(json!(null)),
    }
}

#[cfg(all(test, not(feature = "client-tls")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wss_without_the_tls_feature_fails_at_once_naming_the_feature() {
        let refused = Client::connect("WSS://127.0.0.1:9/rohrpost/")
            .await
            .unwrap_err();
        let ClientError::Connect { reason, .. } = refused else {
            panic!("expected a connect error, got {refused:?}");
        };
        assert!(reason.contains("`client-tls`"), "{reason}");
    }
}
