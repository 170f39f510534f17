//! One connection's task (its stages in `task`): the handshake (see `upgrade`), the setup,
//! the read loop (frames to the dispatcher), the write loop (queued messages, written in
//! batches) and closing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::join::Join;
use super::task::{ConnectionTask, Start, Started};
use super::{RateLimit, Shared};
use crate::connection::Budget;
use crate::handshake::Accept;
use crate::message::Message;
use crate::metrics::{Counter, Metrics};
use crate::outbound::{Item, Outbound};
use crate::protocol::{
    BINARY_FRAME_ERROR, INVALID_UTF8_CLOSE, MESSAGE_TOO_BIG_CLOSE, PROTOCOL_ERROR_CLOSE,
    RATE_LIMITED, SHUTTING_DOWN_CLOSE, SLOW_CLIENT_CLOSE,
};
use crate::Connection;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// At most this many queued messages are written before a flush.
const WRITE_BATCH: usize = 256;

/// The longest a closed connection is drained for the client's close reply.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// The transport under a WebSocket: a TCP stream, or an upgraded HTTP connection (axum).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// The socket's halves: the reader's stream and the writer's sink.
pub(crate) type Halves<S> = (
    SplitSink<WebSocketStream<S>, Frame>,
    SplitStream<WebSocketStream<S>>,
);

/// A connection's task from the accept on: the handshake, then [`connection_task`].
pub(super) fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send + 'static {
    // Counted from the accept, so that handshakes in progress count against the limit.
    let open = shared.metrics.open_connection();
    let counted = OpenConnection(shared.metrics.clone());
    let over_capacity = open > shared.config.max_connections as u64;
    connection_task::<TcpStream>(
        counted,
        Box::pin(async move {
            let _ = stream.set_nodelay(true);
            match super::upgrade::handshake(stream, peer, &shared, over_capacity).await {
                Ok((socket, accepted)) => Some(start(socket.split(), peer, shared, accepted).await),
                Err(reason) => {
                    tracing::debug!(%peer, %reason, "handshake refused");
                    None
                }
            }
        }),
    )
}

/// The task of a connection that `start` sets up (or refuses: `None`): it serves it until
/// it ends, then closes it (see [`ConnectionTask`]).
pub(crate) fn connection_task<S: Transport>(
    open: OpenConnection,
    start: Start<Halves<S>>,
) -> impl Future<Output = ()> + Send + 'static {
    ConnectionTask::new(open, start, serving::<S>, closing::<S>)
}

/// Sets up a connection whose handshake was accepted: registered, counted, its connect hook
/// run. Returns what serving it takes, and the guard that takes it out of its groups and the
/// server's list when its task ends, however it ends.
pub(crate) async fn start<S: Transport>(
    halves: Halves<S>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    accepted: Accept,
) -> (Started<Halves<S>>, LeaveOnDrop) {
    shared.metrics.add(Counter::ConnectionsTotal);
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let budget = Budget {
        outbound_queue: shared.config.outbound_queue,
        reply_backlog: shared.config.reply_backlog,
        write_timeout: shared.config.write_timeout,
        metrics: shared.metrics.clone(),
    };
    let connection = Connection::new(
        id,
        peer,
        CancellationToken::new(),
        shared.groups.clone(),
        budget,
        accepted.state,
    );
    let membership = LeaveOnDrop(connection.clone(), shared.clone());
    shared.connections.register(&connection);
    shared.groups.register(&connection);
    tracing::debug!(connection = id, %peer, "connection opened");
    if let Some(hook) = &shared.on_connect {
        hook.run(&connection, shared.config.handler_timeout).await;
    }
    let started = Started {
        halves,
        connection,
        shared,
    };
    (started, membership)
}

/// The reader's end: how the read loop ended, and its half of the socket.
struct ReaderDone<S> {
    end: End,
    stream: SplitStream<WebSocketStream<S>>,
}

/// The writer's end: the item it had taken off the queue but not handed to the socket, its
/// half of the socket, and what the closing steps need.
struct WriterDone<S> {
    unsent: Option<Item>,
    sink: SplitSink<WebSocketStream<S>, Frame>,
    connection: Connection,
    shared: Arc<Shared>,
}

/// Serving a connection: reader and writer joined in its task. A reply queued by the reader
/// is written in the same poll (the reader is polled first), and dropping the task drops the
/// socket. A push wakes the writer side directly, through the queue's own wake-up state,
/// which the join reaches through the connection: no waker to register for every push. The
/// writer is the second side (`WRITER_SIDE`).
fn serving<S: Transport>(
    started: Started<Halves<S>>,
) -> Join<
    impl Future<Output = ReaderDone<S>> + Send,
    impl Future<Output = WriterDone<S>> + Send,
    Connection,
> {
    let Started {
        halves: (sink, stream),
        connection,
        shared,
    } = started;
    super::join::join_with(
        connection.clone(),
        read_side(stream, connection.clone(), shared.clone()),
        write_loop(sink, connection, shared),
    )
}

/// The closing steps once reader and writer are done, boxed: they hold the whole socket and
/// their timers, which every idle connection's task would otherwise reserve room for all its
/// life.
fn closing<S: Transport>(
    (reader, writer): (ReaderDone<S>, WriterDone<S>),
) -> BoxFuture<'static, ()> {
    Box::pin(close_connection(reader, writer))
}

async fn close_connection<S: Transport>(reader: ReaderDone<S>, writer: WriterDone<S>) {
    let WriterDone {
        unsent,
        sink,
        connection,
        shared,
    } = writer;
    let ReaderDone { end, stream } = reader;
    // Nothing can reach the connection any more: leave its groups now, not after lingering.
    connection.stop();
    if let Some(hook) = &shared.on_disconnect {
        hook.run(&connection, shared.config.handler_timeout).await;
    }
    connection.server_groups().disconnected(&connection);
    match sink.reunite(stream) {
        Ok(socket) => close(socket, &connection, &shared, unsent, &end).await,
        Err(error) => tracing::error!(
            connection = connection.id(),
            %error,
            "cannot reunite the socket's halves"
        ),
    }
    tracing::debug!(
        connection = connection.id(),
        peer = %connection.peer_addr(),
        ?end,
        "connection closed"
    );
}

/// Reads until the connection ends, then ends it the way the read loop says.
async fn read_side<S: Transport>(
    mut stream: SplitStream<WebSocketStream<S>>,
    connection: Connection,
    shared: Arc<Shared>,
) -> ReaderDone<S> {
    let end = read_loop(&mut stream, &connection, &shared).await;
    match end {
        End::Shutdown => {
            let _ = connection.close_with(1001, SHUTTING_DOWN_CLOSE);
        }
        End::Peer => connection.stop(),
        End::Closed => {}
    }
    ReaderDone { end, stream }
}

/// Closes the socket, then (unless the client left) drains it for the client's close reply.
async fn close<S: Transport>(
    mut socket: WebSocketStream<S>,
    connection: &Connection,
    shared: &Shared,
    unsent: Option<Item>,
    end: &End,
) {
    close_socket(&mut socket, connection, shared, unsent).await;
    if !matches!(end, End::Peer) {
        linger(&mut socket, shared.config.close_timeout.min(LINGER)).await;
    }
}

/// Counts the connection out when its task ends, however it ends.
pub(crate) struct OpenConnection(pub(crate) Metrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.close_connection();
    }
}

/// Why a connection's read loop ended.
#[derive(Debug)]
enum End {
    /// The client closed or went away.
    Peer,
    /// The server is shutting down: close in order, after the queued messages.
    Shutdown,
    /// The connection was closed from our side: by a handler, or at once (a protocol
    /// violation, a client that does not read).
    Closed,
}

async fn read_loop<S: Transport>(
    stream: &mut SplitStream<WebSocketStream<S>>,
    connection: &Connection,
    shared: &Shared,
) -> End {
    let signal = connection.reader_signal();
    let mut liveness = Liveness::new(shared.config.ping_interval, shared.config.ping_timeout);
    let ping_timer = tokio::time::sleep_until(liveness.next_check());
    tokio::pin!(signal, ping_timer);
    let mut bucket = shared.config.rate_limit.map(TokenBucket::new);
    // Handlers running beside the read loop; empty unless `handlers_per_connection` > 1.
    let concurrent = shared.config.handlers_per_connection > 1;
    let mut running = Running::default();
    loop {
        if connection.is_closed() {
            return End::Closed;
        }
        // Replies wait for the client to read them: while too many do, read no more requests.
        let backlog_full = connection.outbound().backlog_full();
        let reading = running.len() < shared.config.handlers_per_connection && !backlog_full;
        let frame = tokio::select! {
            biased;
            stopped = &mut signal => {
                if stopped {
                    return End::Closed;
                }
                return finish(&mut running, connection, End::Shutdown).await;
            }
            Some(reply) = running.next(), if running.len() > 0 => {
                if let Some(reply) = reply {
                    if connection.send_reply(reply).is_err() {
                        return End::Closed;
                    }
                }
                continue;
            }
            frame = stream.next(), if reading => frame,
            () = connection.outbound().backlog_drained(), if backlog_full => continue,
            _ = &mut ping_timer => {
                if !reading {
                    // The socket is not read while every handler slot is busy or replies
                    // pile up: an unseen pong is not the client's fault.
                    liveness.heard();
                }
                match liveness.check() {
                    Check::Wait => {}
                    Check::Ping => connection.ping(),
                    Check::Dead => {
                        shared.metrics.add(Counter::PingTimeouts);
                        tracing::debug!(connection = connection.id(), "client stopped answering pings");
                        connection.stop();
                        // Gone: nothing to linger for.
                        return End::Peer;
                    }
                }
                ping_timer.as_mut().reset(liveness.next_check());
                continue;
            }
        };
        liveness.heard();
        let reply = match frame {
            Some(Ok(Frame::Text(text))) => {
                shared.metrics.add(Counter::Messages);
                if bucket.as_mut().is_some_and(|bucket| !bucket.take()) {
                    shared.metrics.add(Counter::RateLimited);
                    Some(shared.dispatcher.refuse(&text, RATE_LIMITED))
                } else if let Some(pong) = shared.dispatcher.pong_now(&text) {
                    Some(pong)
                } else if concurrent {
                    running.push(shared.dispatcher.dispatch(text, connection));
                    None
                } else {
                    // Boxed: a handler's future lives for one message, and every idle
                    // connection's task would otherwise reserve room for it all its life.
                    let dispatch = Box::pin(shared.dispatcher.dispatch(text, connection));
                    tokio::select! {
                        biased;
                        // A connection stopped at once does not wait for its handler; at
                        // shutdown, the handler finishes (within the shutdown timeout).
                        _ = connection.reader_stopped() => return End::Closed,
                        reply = dispatch => reply,
                    }
                }
            }
            Some(Ok(Frame::Binary(_))) => Message::error(BINARY_FRAME_ERROR).to_json().ok(),
            Some(Ok(Frame::Close(_))) | None => {
                return finish(&mut running, connection, End::Peer).await
            }
            Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => None,
            Some(Err(error)) => return refuse(connection, error),
        };
        if let Some(reply) = reply {
            if connection.send_reply(reply).is_err() {
                return End::Closed;
            }
        }
    }
}

/// The handlers running beside a connection's read loop (`handlers_per_connection` > 1).
/// The set is made at the first such handler: an empty `FuturesUnordered` allocates, and
/// most connections never need one.
struct Running<F>(Option<FuturesUnordered<F>>);

impl<F> Default for Running<F> {
    fn default() -> Self {
        Self(None)
    }
}

impl<F: std::future::Future<Output = Option<String>>> Running<F> {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn push(&mut self, handler: F) {
        self.0
            .get_or_insert_with(FuturesUnordered::new)
            .push(handler);
    }

    /// The next finished handler's reply; `None` when none is running.
    async fn next(&mut self) -> Option<Option<String>> {
        self.0.as_mut()?.next().await
    }
}

/// Lets the handlers still running finish, as a connection that handles one message at a
/// time finishes its handler before it sees a close; then ends with `end`. At shutdown
/// their replies are sent, and a connection stopped at once meanwhile does not wait; after
/// the client left, the replies have nowhere to go, but the handlers' work is done.
async fn finish<F>(running: &mut Running<F>, connection: &Connection, end: End) -> End
where
    F: std::future::Future<Output = Option<String>>,
{
    if matches!(end, End::Peer) {
        while running.next().await.is_some() {}
        return end;
    }
    while running.len() > 0 {
        let reply = tokio::select! {
            biased;
            _ = connection.reader_stopped() => return End::Closed,
            Some(reply) = running.next() => reply,
        };
        if let Some(reply) = reply {
            if connection.send_reply(reply).is_err() {
                return End::Closed;
            }
        }
    }
    end
}

/// Closes the connection with the code that names what the client did wrong.
fn refuse(connection: &Connection, error: tungstenite::Error) -> End {
    use tungstenite::Error as E;
    let (code, reason) = match &error {
        E::Capacity(_) => (CloseCode::Size, MESSAGE_TOO_BIG_CLOSE),
        E::Utf8(_) => (CloseCode::Invalid, INVALID_UTF8_CLOSE),
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return End::Peer,
        E::Protocol(_) => (CloseCode::Protocol, PROTOCOL_ERROR_CLOSE),
        _ => {
            tracing::debug!(connection = connection.id(), %error, "connection lost");
            return End::Peer;
        }
    };
    tracing::debug!(connection = connection.id(), %error, "closing connection: {reason}");
    connection.abort(code, reason);
    End::Closed
}

/// Writes queued items until the connection stops; hands back what closing the connection
/// takes, with the item it had taken off the queue but not yet handed to the socket, if any.
///
/// A function returning an `async move` block rather than an `async fn`: an `async fn`'s
/// state keeps its arguments twice (as received, and moved into its body), and a push to an
/// idle writer reads the state's lines cold, one per 64 bytes. Here the captured socket half,
/// connection and flags come first and once.
// Not an `async fn`, on purpose (see above).
#[allow(clippy::manual_async_fn)]
fn write_loop<S: Transport>(
    mut sink: SplitSink<WebSocketStream<S>, Frame>,
    connection: Connection,
    shared: Arc<Shared>,
) -> impl Future<Output = WriterDone<S>> + Send {
    async move {
        // Taken off the queue but not yet handed to the socket: kept here, so that an abort
        // while the socket is full does not lose it.
        let mut pending: Option<Item> = None;
        // The last item taken (`pending`, or the one written last) left the queue empty: the
        // writer counts as waiting, and the next push wakes it.
        let mut drained = false;
        loop {
            if pending.is_none() {
                // One wake-up for the queue and the stop, through the join: a push registers
                // nothing, and only the first push to a waiting writer wakes it.
                let next = connection
                    .outbound()
                    .next_unless(|| connection.is_stopped(), drained);
                match next.await {
                    Some((item, last)) => (pending, drained) = (Some(item), last),
                    None => break,
                }
            }
            // Usually the socket takes the batch at once: no timer for that. `write_batch` is
            // cancel-safe, so an unfinished attempt is simply resumed under the write timeout,
            // and stops at once if the connection is stopped meanwhile. That rarer wait is
            // boxed: its timer would otherwise widen the state every poll reads.
            let queue = connection.outbound();
            let written =
                match write_batch(&mut sink, queue, &mut pending, &mut drained).now_or_never() {
                    Some(written) => Ok(written),
                    None => {
                        let full = Box::pin(async {
                            tokio::select! {
                                biased;
                                _ = connection.writer_signal() => None,
                                written = tokio::time::timeout(
                                    shared.config.write_timeout,
                                    write_batch(&mut sink, queue, &mut pending, &mut drained),
                                ) => Some(written),
                            }
                        });
                        match full.await {
                            Some(written) => written,
                            None => break,
                        }
                    }
                };
            match written {
                Ok(Ok(Batch::Open)) => {}
                Ok(Ok(Batch::Closed) | Err(_)) => break,
                Err(_) => {
                    // The socket took nothing for the whole write timeout.
                    connection.abort(CloseCode::Policy, SLOW_CLIENT_CLOSE);
                    break;
                }
            }
        }
        connection.outbound().close();
        // Stops the reader too, whoever ended first.
        connection.stop();
        WriterDone {
            unsent: pending,
            sink,
            connection,
            shared,
        }
    }
}

/// Ends the connection's side of the socket. A connection stopped on purpose (a slow
/// client, a protocol error) still gets what was accepted for it, and then its close frame
/// with code and reason. Both go into the socket's write buffer whether or not the socket
/// has room (`start_send` without `poll_ready`: tokio-tungstenite keeps a frame it cannot
/// write yet), so the close frame comes right behind them and is not lost to a timeout
/// while they wait: a client that reads late still learns why it was cut off, rather than
/// seeing a close without a status. What is buffered is bounded by the queue's limits.
/// Then everything, and the close frame (ours, or the reply to the client's), is flushed
/// within the close timeout, or twice that for a client cut off (it has more to read).
async fn close_socket<S: Transport>(
    socket: &mut WebSocketStream<S>,
    connection: &Connection,
    shared: &Shared,
    unsent: Option<Item>,
) {
    if let Some(frame) = connection.take_abort_frame() {
        if frame.reason == SLOW_CLIENT_CLOSE {
            shared.metrics.add(Counter::SlowClients);
        }
        let queue = connection.outbound();
        let queued = std::iter::from_fn(|| queue.pop());
        for item in unsent.into_iter().chain(queued) {
            let text = match item {
                Item::Reply(text) | Item::Push(text, _) => text,
                Item::Ping => continue,
                Item::Close(_) => break,
            };
            if socket.start_send_unpin(Frame::Text(text)).is_err() {
                break;
            }
        }
        let _ = socket.start_send_unpin(Frame::Close(Some(frame)));
        let _ = tokio::time::timeout(shared.config.close_timeout * 2, SinkExt::close(socket)).await;
        return;
    }
    let _ = tokio::time::timeout(shared.config.close_timeout, SinkExt::close(socket)).await;
}

/// Server-side liveness: when to ping, and when a pinged client counts as gone. A frame only
/// sets a flag (no clock read, no timer reset per message); the timer reads the clock when
/// it fires, so a silence is measured from the check that last saw the client active, up to
/// one interval late.
struct Liveness {
    interval: Duration,
    timeout: Duration,
    heard: Instant,
    active: bool,
    pinged: Option<Instant>,
}

enum Check {
    Wait,
    Ping,
    Dead,
}

impl Liveness {
    fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            heard: Instant::now(),
            active: false,
            pinged: None,
        }
    }

    fn heard(&mut self) {
        self.active = true;
    }

    fn next_check(&self) -> Instant {
        match self.pinged {
            Some(pinged) => pinged + self.timeout,
            None => self.heard + self.interval,
        }
    }

    fn check(&mut self) -> Check {
        let now = Instant::now();
        if std::mem::take(&mut self.active) {
            self.heard = now;
            self.pinged = None;
        }
        match self.pinged {
            Some(pinged) if now >= pinged + self.timeout => Check::Dead,
            Some(_) => Check::Wait,
            None if now >= self.heard + self.interval => {
                self.pinged = Some(now);
                Check::Ping
            }
            None => Check::Wait,
        }
    }
}

/// A per-connection token bucket.
struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    filled: Instant,
}

impl TokenBucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            filled: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.filled).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(self.limit.burst));
        self.filled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

enum Batch {
    Open,
    Closed,
}

/// Writes `pending` and whatever else is queued already (up to a batch), then flushes once;
/// `drained` says that the last item taken left the queue empty (no need to look again).
/// Cancel-safe: an item leaves `pending` only when the socket has taken it.
async fn write_batch<S: Transport>(
    sink: &mut SplitSink<WebSocketStream<S>, Frame>,
    queue: &Outbound,
    pending: &mut Option<Item>,
    drained: &mut bool,
) -> Result<Batch, tungstenite::Error> {
    for _ in 0..WRITE_BATCH {
        futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await?;
        let Some(item) = pending.take() else { break };
        match item {
            Item::Reply(text) | Item::Push(text, _) => sink.start_send_unpin(Frame::Text(text))?,
            Item::Ping => sink.start_send_unpin(Frame::Ping(Default::default()))?,
            Item::Close(frame) => {
                sink.start_send_unpin(Frame::Close(Some(frame)))?;
                sink.flush().await?;
                return Ok(Batch::Closed);
            }
        }
        if *drained {
            break;
        }
        match queue.take() {
            Some((next, last)) => (*pending, *drained) = (Some(next), last),
            None => {
                *drained = true;
                break;
            }
        }
    }
    sink.flush().await?;
    Ok(Batch::Open)
}

/// Leaves every group and the server's list when dropped: kept by the connection's task.
pub(crate) struct LeaveOnDrop(Connection, Arc<Shared>);

impl Drop for LeaveOnDrop {
    fn drop(&mut self) {
        // Marks the connection closed first, so that a join racing with the close undoes
        // itself (see `Groups::join`).
        // The task's wakers hold the connection: none may stay behind in it. `stop` takes
        // the reader's and writer's stop wakers, closing the queue the reader's backlog
        // waker (and wakes senders waiting for room).
        self.0.stop();
        self.0.outbound().close();
        self.0.server_groups().disconnected(&self.0);
        self.0.server_groups().unregister(&self.0);
        self.1.connections.unregister(&self.0);
    }
}

/// Reads and discards what the client still sends after our close frame, until it answers
/// with its own or the time is up: closing a socket with unread data makes the kernel send a
/// reset, and the client would then never read the close frame that says why.
async fn linger<S: Transport>(stream: &mut WebSocketStream<S>, time: Duration) {
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
