//! The tokio-tungstenite server: builder, limits, accept loop, per-connection tasks, shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::connection::Outbound;
use crate::dispatch::Dispatcher;
use crate::message::Message;
use crate::registry::DuplicateHandler;
use crate::state::TypeMap;
use crate::{Connection, Handlers};

/// The default endpoint path, as in the original's routing (`/rohrpost/`).
pub const DEFAULT_PATH: &str = "/rohrpost/";
/// Default largest incoming message: 1 MiB. Larger messages close the connection with 1009.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;
/// Default length of each connection's outbound queue, in messages.
pub const DEFAULT_OUTBOUND_QUEUE: usize = 1024;
/// Default time a client has to complete the WebSocket handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time running handlers get to finish when the server shuts down.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a closing connection gets to flush its last messages and close frame.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The reply to a binary frame: the protocol is JSON in text frames.
pub const BINARY_FRAME_ERROR: &str =
    "Binary frames are not supported: send each message as one JSON text frame.";

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
/// | [`outbound_queue`](Self::outbound_queue) | 1024 messages | close code 1008 when a non-reading client's queue is full |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s | connection dropped |
/// | [`shutdown_timeout`](Self::shutdown_timeout) | 10 s | handlers still running then are dropped |
/// | [`close_timeout`](Self::close_timeout) | 5 s | socket dropped without a close handshake |
///
/// ```no_run
/// use std::time::Duration;
/// use rohrpost::prelude::*;
///
/// # async fn start() -> Result<(), rohrpost::ServerError> {
/// let server = Server::builder()
///     .path("/ws/")
///     .max_message_size(64 * 1024)
///     .shutdown_timeout(Duration::from_secs(30))
///     .bind("127.0.0.1:8000")
///     .await?;
/// server.serve().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a builder does nothing until `bind` is awaited"]
pub struct ServerBuilder {
    path: String,
    handlers: Option<Handlers>,
    state: TypeMap,
    max_message_size: usize,
    outbound_queue: usize,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    close_timeout: Duration,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.to_owned(),
            handlers: None,
            state: TypeMap::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            outbound_queue: DEFAULT_OUTBOUND_QUEUE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl ServerBuilder {
    /// The URL path of the endpoint (default `/rohrpost/`); must start with `/`. The query
    /// string is ignored; any other path is refused at the handshake with HTTP 404.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// The handlers to serve, instead of every `#[rohrpost_handler]` in the program
    /// ([`Handlers::collect`], the default).
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = Some(handlers);
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
        self.max_message_size = bytes;
        self
    }

    /// How many messages may wait to be written to one client (default 1024). When a client
    /// does not read and its queue is full, [`Connection::send`] fails with
    /// [`SendError::QueueFull`](crate::SendError::QueueFull) and the connection is closed with
    /// code 1008. Replies to the client's own requests wait for room instead: a client that
    /// does not read its replies is not read from.
    pub fn outbound_queue(mut self, messages: usize) -> Self {
        self.outbound_queue = messages;
        self
    }

    /// How long a client has to complete the WebSocket handshake (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long running handlers may take to finish once shutdown begins (default 10 s);
    /// connections still busy then are dropped.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a closing connection may take to flush its last messages and its close
    /// frame (default 5 s) before the socket is dropped.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Checks the settings and the handlers, and opens the listening socket. Use port 0 for
    /// a free port and read it back with [`Server::local_addr`].
    pub async fn bind(
        self,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<Server, ServerError> {
        if !self.path.starts_with('/') {
            return Err(ServerError::InvalidConfig(format!(
                "the path must start with '/', got {:?}",
                self.path
            )));
        }
        if self.outbound_queue == 0 || self.max_message_size == 0 {
            return Err(ServerError::InvalidConfig(
                "outbound_queue and max_message_size must be at least 1".into(),
            ));
        }
        let handlers = self.handlers.unwrap_or_else(Handlers::collect);
        handlers.check()?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| ServerError::Bind {
                addr: format!("{addr:?}").trim_matches('"').to_owned(),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: format!("{addr:?}"),
            source,
        })?;
        let websocket = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_SIZE)
            .max_message_size(Some(self.max_message_size))
            .max_frame_size(Some(self.max_message_size));
        Ok(Server {
            listener,
            local_addr,
            shared: Arc::new(Shared {
                dispatcher: Dispatcher::new(handlers, self.state),
                path: self.path,
                websocket,
                outbound_queue: self.outbound_queue,
                handshake_timeout: self.handshake_timeout,
                close_timeout: self.close_timeout,
            }),
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// Small, since most connections are idle; tungstenite grows its message buffer as needed.
const READ_BUFFER_SIZE: usize = 4096;

/// At most this many queued messages are written before a flush.
const WRITE_BATCH: usize = 256;

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
/// async fn main() -> Result<(), rohrpost::ServerError> {
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
    shutdown_timeout: Duration,
}

#[derive(Debug)]
struct Shared {
    dispatcher: Dispatcher,
    path: String,
    websocket: WebSocketConfig,
    outbound_queue: usize,
    handshake_timeout: Duration,
    close_timeout: Duration,
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

    /// The endpoint's URL, e.g. `ws://127.0.0.1:8000/rohrpost/`.
    pub fn url(&self) -> String {
        format!("ws://{}{}", self.local_addr, self.shared.path)
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
            shutdown_timeout,
        } = self;
        tracing::info!(addr = %local_addr, path = %shared.path, "rohrpost server listening");
        let shutdown = CancellationToken::new();
        let mut connections = JoinSet::new();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(stream, peer, shared.clone(), shutdown.clone()));
                    }
                    Err(error) => {
                        // Typically out of file descriptors: wait rather than spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!(
            connections = connections.len(),
            "rohrpost server shutting down"
        );
        shutdown.cancel();
        let drained = tokio::time::timeout(shutdown_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "shutdown timeout passed: dropping the connections still busy"
            );
            connections.shutdown().await;
        }
        tracing::info!("rohrpost server stopped");
    }
}

/// Completes on Ctrl-C, or on SIGTERM on Unix: the usual signals to stop a server.
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

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

type Socket = WebSocketStream<TcpStream>;

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let socket = match handshake(stream, &shared).await {
        Ok(socket) => socket,
        Err(reason) => {
            tracing::debug!(%peer, %reason, "handshake refused");
            return;
        }
    };
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let (sink, mut stream) = socket.split();
    let (outbound, queue) = mpsc::channel(shared.outbound_queue);
    let connection = Connection::new(id, peer, outbound, CancellationToken::new());
    tracing::debug!(connection = id, %peer, "connection opened");
    // Reader and writer run in this one task, so that dropping it (shutdown timeout) drops
    // the socket, and an idle connection costs one task.
    let reading = async {
        let end = read_loop(&mut stream, &connection, &shared, &shutdown).await;
        match end {
            End::Shutdown => connection.close_with(1001, "server shutting down"),
            End::Peer => connection.abort_token().cancel(),
            End::Aborted => {}
        }
        end
    };
    let writing = write_loop(sink, queue, connection.clone(), shared.close_timeout);
    let (end, ()) = tokio::join!(reading, writing);
    if let End::Aborted = end {
        linger(&mut stream, shared.close_timeout.min(LINGER)).await;
    }
    tracing::debug!(connection = id, %peer, ?end, "connection closed");
}

/// The longest a refused connection is drained after its close frame.
const LINGER: Duration = Duration::from_secs(2);

/// Reads and discards what a refused client still sends, until it answers the close frame
/// or the time is up: closing a socket with unread data makes the kernel send a reset, and
/// the client would then never read the close frame that says why.
async fn linger(stream: &mut SplitStream<Socket>, time: Duration) {
    let _ = tokio::time::timeout(time, async {
        while let Some(frame) = stream.next().await {
            if let Err(
                tungstenite::Error::Io(_)
                | tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed,
            ) = frame
            {
                break;
            }
        }
    })
    .await;
}

async fn handshake(stream: TcpStream, shared: &Shared) -> Result<Socket, String> {
    // The error type is tungstenite's handshake callback's, large or not.
    #[allow(clippy::result_large_err)]
    let check_path = |request: &Request, response: Response| {
        if request.uri().path() == shared.path {
            Ok(response)
        } else {
            let mut refusal = ErrorResponse::new(Some(format!(
                "no rohrpost endpoint at {}",
                request.uri().path()
            )));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            Err(refusal)
        }
    };
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(shared.websocket));
    match tokio::time::timeout(shared.handshake_timeout, accept).await {
        Ok(Ok(socket)) => Ok(socket),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("handshake timed out".to_owned()),
    }
}

/// Why a connection's read loop ended.
#[derive(Debug)]
enum End {
    /// The client closed or went away.
    Peer,
    /// The server is shutting down: close in order, after the queued messages.
    Shutdown,
    /// The connection was stopped at once (protocol violation, slow client, handler's abort).
    Aborted,
}

async fn read_loop(
    stream: &mut SplitStream<Socket>,
    connection: &Connection,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> End {
    let abort = connection.abort_token();
    loop {
        let frame = tokio::select! {
            biased;
            _ = abort.cancelled() => return End::Aborted,
            _ = shutdown.cancelled() => return End::Shutdown,
            frame = stream.next() => frame,
        };
        let reply = match frame {
            Some(Ok(Frame::Text(text))) => shared.dispatcher.dispatch(&text, connection).await,
            Some(Ok(Frame::Binary(_))) => Message::error(BINARY_FRAME_ERROR).to_json().ok(),
            Some(Ok(Frame::Close(_))) | None => return End::Peer,
            Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => None,
            Some(Err(error)) => {
                refuse(connection, error);
                return End::Aborted;
            }
        };
        if let Some(reply) = reply {
            if connection.send_reply(reply).await.is_err() {
                return End::Aborted;
            }
        }
    }
}

/// Closes the connection with the code that names what the client did wrong.
fn refuse(connection: &Connection, error: tungstenite::Error) {
    use tungstenite::Error as E;
    let (code, reason) = match &error {
        E::Capacity(_) => (CloseCode::Size, "message too big"),
        E::Utf8(_) => (CloseCode::Invalid, "text frame is not valid UTF-8"),
        E::Protocol(_) => (CloseCode::Protocol, "WebSocket protocol error"),
        _ => {
            tracing::debug!(connection = connection.id(), %error, "connection lost");
            connection.abort_token().cancel();
            return;
        }
    };
    tracing::debug!(connection = connection.id(), %error, "closing connection: {reason}");
    connection.abort(code, reason);
}

async fn write_loop(
    mut sink: SplitSink<Socket, Frame>,
    mut queue: mpsc::Receiver<Outbound>,
    connection: Connection,
    close_timeout: Duration,
) {
    let abort = connection.abort_token().clone();
    loop {
        let first = tokio::select! {
            biased;
            _ = abort.cancelled() => break,
            item = queue.recv() => item,
        };
        let Some(first) = first else { break };
        let written = tokio::select! {
            biased;
            _ = abort.cancelled() => break,
            written = write_batch(&mut sink, &mut queue, first) => written,
        };
        match written {
            Ok(Batch::Open) => {}
            Ok(Batch::Closed) | Err(_) => break,
        }
    }
    if let Some(frame) = connection.take_abort_frame() {
        // Stopped on purpose (a slow client, a protocol error): still deliver what was
        // accepted for it, and say why, if the client reads within the close timeout.
        let farewell = async {
            while let Ok(Outbound::Text(text)) = queue.try_recv() {
                sink.feed(Frame::Text(text)).await?;
            }
            sink.send(Frame::Close(Some(frame))).await
        };
        let _ = tokio::time::timeout(close_timeout, farewell).await;
    }
    // Stops the reader too, whoever ended first.
    abort.cancel();
}

enum Batch {
    Open,
    Closed,
}

/// Writes `first` and whatever else is queued already (up to a batch), then flushes once.
async fn write_batch(
    sink: &mut SplitSink<Socket, Frame>,
    queue: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
) -> Result<Batch, tungstenite::Error> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(item) = next.take() {
        match item {
            Outbound::Text(text) => sink.feed(Frame::Text(text)).await?,
            Outbound::Close(frame) => {
                sink.send(Frame::Close(Some(frame))).await?;
                return Ok(Batch::Closed);
            }
        }
        written += 1;
        if written < WRITE_BATCH {
            next = queue.try_recv().ok();
        }
    }
    sink.flush().await?;
    Ok(Batch::Open)
}
