//! The per-connection handle: send, close, state.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;

use thiserror::Error;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::groups::{GroupError, Groups, Push};
use crate::lock::lock;
use crate::message::{EmptyMessage, Message};
use crate::metrics::{Counter, Metrics};
use crate::outbound::{Class, Item, Outbound, Queued, Refused};
use crate::type_map::TypeMap;

/// A handle to one client's connection: cheap to clone, usable from any task.
///
/// Take it as a handler argument to send further messages, to close the connection, or to
/// keep per-connection state (who the client is) between requests.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[derive(Debug)]
/// struct User(String);
///
/// #[rohrpost_handler("login")]
/// async fn login(conn: Connection, Data(name): Data<String>) -> NoReply {
///     conn.insert(User(name.clone()));
///     let _ = conn.send(Message::success("welcome", 0).with_data(json!({ "name": name }))).await;
///     NoReply
/// }
///
/// #[rohrpost_handler("whoami")]
/// async fn whoami(conn: Connection) -> Option<String> {
///     conn.get::<User>().map(|user| user.0.clone())
/// }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// In declaration order (`repr(C)`): the flags every send reads sit right before the
/// outbound queue's own hot fields (see `Outbound`).
#[repr(C)]
struct Inner {
    /// Set once a close was queued: later sends are refused rather than lost behind it.
    closing: AtomicBool,
    /// Set with `abort`, readable without the token's lock (checked on every send).
    stopped: AtomicBool,
    /// How long a full queue may wait for the client (read with every push).
    write_timeout: Duration,
    outbound: Outbound,
    id: u64,
    peer: SocketAddr,
    /// Cancelled when the connection must stop at once (not in order with queued messages).
    abort: CancellationToken,
    abort_frame: Mutex<Option<CloseFrame>>,
    /// Set when the server shuts down: the reader stops after the current message.
    shutting_down: AtomicBool,
    /// The reader's and the writer's wakers for `stopped`/`shutting_down`: registering one
    /// takes a few atomic operations, where a cancellation token takes a lock per poll.
    reader_waker: AtomicWaker,
    writer_waker: AtomicWaker,
    metrics: Metrics,
    state: Mutex<TypeMap>,
    groups: Groups,
}

/// A connection's limits on what waits for the client, and where their counters go.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    /// Pushes queued at most (see [`crate::groups::Policy`]).
    pub(crate) outbound_queue: usize,
    /// Replies queued at most before the reader stops reading.
    pub(crate) reply_backlog: usize,
    /// How long a full queue may wait for the client.
    pub(crate) write_timeout: Duration,
    pub(crate) metrics: Metrics,
}

/// The join of a connection's reader and writer reaches its wake-up state through the
/// connection: the state sits in the connection's own allocation, beside the queue's flags
/// that every push reads. The wakers of both sides then hold the connection; those it keeps
/// are let go when its task ends: `stop` takes the stop wakers, and
/// closing the outbound queue its backlog waker.
impl crate::server::join::Holder for Connection {
    fn wakeup(&self) -> &crate::server::join::Wakeup {
        self.inner.outbound.wakeup()
    }
}

/// Why a message could not be queued for a client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The message had no field at all.
    #[error(transparent)]
    Empty(#[from] EmptyMessage),
    /// The client's outbound queue is full: the client does not read what it is sent (or a
    /// burst outgrew the queue). The connection is closed with code 1008 rather than
    /// silently losing the message.
    #[error("the client's outbound queue is full ({0} messages): the client is not keeping up, so it is being disconnected")]
    QueueFull(usize),
    /// The connection is closed or closing.
    #[error("the connection is closed")]
    Closed,
    /// [`Connection::close_with`] was given a code an endpoint may not send.
    #[error("{0} is not a close code an endpoint may send: use 1000-1003, 1007-1014 or 3000-4999")]
    InvalidCloseCode(u16),
}

/// Warnings about pushes given up by their policy, one a second at most for the process.
static POLICY_WARNING: Throttle = Throttle::new(Duration::from_secs(1));

/// Lets one event through per period; cheap to ask (one atomic load) while it says no.
struct Throttle {
    period: Duration,
    /// Milliseconds since `epoch()` at the last event let through, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
}

impl Throttle {
    const fn new(period: Duration) -> Self {
        Self {
            period,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn allows(&self) -> bool {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.period.as_millis() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        abort: CancellationToken,
        groups: Groups,
        budget: Budget,
        state: TypeMap,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                peer,
                outbound: Outbound::new(budget.outbound_queue, budget.reply_backlog),
                abort,
                abort_frame: Mutex::new(None),
                closing: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                reader_waker: AtomicWaker::new(),
                writer_waker: AtomicWaker::new(),
                write_timeout: budget.write_timeout,
                metrics: budget.metrics,
                state: Mutex::new(state),
                groups,
            }),
        }
    }

    /// A number unique to this connection within the process.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Queues `message` for the client, waiting while its outbound queue is full.
    ///
    /// Messages are delivered in the order they are queued. A client whose queue stays full
    /// for the write timeout ([`ServerBuilder::write_timeout`](crate::server::ServerBuilder::write_timeout))
    /// is not reading: it is disconnected with close code 1008 and this returns
    /// [`SendError::QueueFull`]. Use [`try_send`](Self::try_send) where waiting is not an
    /// option.
    pub async fn send(&self, message: Message) -> Result<(), SendError> {
        self.send_text(message.to_json()?).await
    }

    /// Queues `message` without waiting. A full outbound queue still takes it while it has
    /// been full for less than the write timeout and holds less than twice its length (a
    /// burst the client is catching up with); past that the message is not queued,
    /// [`SendError::QueueFull`] is returned and the client, which is not keeping up, is
    /// disconnected with close code 1008. Group sends use this, so that a slow member never
    /// delays the sender or the other members.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    /// use rohrpost::SendError;
    ///
    /// /// Tells the client its job started, from code that must not wait for the client.
    /// fn started(conn: &Connection, job: u64) {
    ///     match conn.try_send(Message::success("job.started", 0).with_data(json!({ "job": job }))) {
    ///         Ok(()) => {}
    ///         // Not reading: already disconnected with 1008.
    ///         Err(SendError::QueueFull(capacity)) => tracing::info!(job, capacity, "client too slow"),
    ///         Err(error) => tracing::debug!(job, %error, "not sent"),
    ///     }
    /// }
    /// ```
    pub fn try_send(&self, message: Message) -> Result<(), SendError> {
        self.try_send_text(message.to_json()?)
    }

    /// Like [`send`](Self::send), with an already serialized JSON text frame.
    pub async fn send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.ensure_open()?;
        // Usually there is room: no timer, no waiting.
        let item = match self
            .inner
            .outbound
            .try_push(Item::Push(text.into(), Class::Plain))
        {
            Ok(()) => return Ok(()),
            Err(Refused::Closed(_)) => return Err(SendError::Closed),
            Err(Refused::Full(item)) => item,
        };
        let queued = tokio::select! {
            biased;
            _ = self.inner.abort.cancelled() => return Err(SendError::Closed),
            queued = tokio::time::timeout(
                self.inner.write_timeout,
                self.inner.outbound.push(item),
            ) => queued,
        };
        match queued {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::Closed),
            Err(_) => Err(self.queue_full()),
        }
    }

    /// Like [`try_send`](Self::try_send), with an already serialized JSON text frame
    /// (serialize once, send to many).
    ///
    /// ```
    /// use rohrpost::prelude::*;
    /// use rohrpost::Utf8Bytes;
    ///
    /// /// One serialization, the same bytes queued for every connection.
    /// fn broadcast(connections: &[Connection], message: &Message) -> Result<(), Error> {
    ///     let frame = Utf8Bytes::from(message.to_json()?);
    ///     for conn in connections {
    ///         let _ = conn.try_send_text(frame.clone()); // a cheap clone: shared bytes
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn try_send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.try_queue(Item::Push(text.into(), Class::Plain))
    }

    /// Queues a group push without waiting, under its [`Policy`](crate::groups::Policy):
    /// what a [`GroupLayer`](crate::groups::GroupLayer) calls for each member. A push the policy
    /// gives up (a conflated update, a dropped volatile message) still counts as queued;
    /// [`SendError::QueueFull`] means the member was disconnected.
    pub fn try_send_push(&self, push: &Push) -> Result<(), SendError> {
        self.try_queue(Item::Push(push.frame().clone(), push.class().clone()))
    }

    fn try_queue(&self, item: Item) -> Result<(), SendError> {
        self.ensure_open()?;
        match self
            .inner
            .outbound
            .try_push_with_grace(item, self.inner.write_timeout)
        {
            Ok(queued) => {
                self.count_given_up(queued);
                Ok(())
            }
            Err(Refused::Closed(_)) => Err(SendError::Closed),
            Err(Refused::Full(_)) => Err(self.queue_full()),
        }
    }

    /// Counts the pushes a policy gave up, with a warning at most once a second.
    fn count_given_up(&self, queued: Queued) {
        if queued == Queued::default() {
            return;
        }
        let metrics = &self.inner.metrics;
        metrics.add_n(Counter::PushesConflated, queued.conflated as u64);
        metrics.add_n(Counter::PushesDroppedVolatile, queued.dropped as u64);
        if POLICY_WARNING.allows() {
            let totals = metrics.snapshot();
            tracing::warn!(
                connection = self.inner.id,
                pushes_conflated = totals.pushes_conflated,
                pushes_dropped_volatile = totals.pushes_dropped_volatile,
                "a client is not keeping up with its pushes: conflating or dropping them by their policy (at most one such warning a second)"
            );
        }
    }

    /// Queues the reply to one of the client's requests: never refused while the connection
    /// is open (the reader stops reading while the reply backlog is full instead).
    pub(crate) fn send_reply(&self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.ensure_open()?;
        self.inner
            .outbound
            .push_reply(text.into())
            .map_err(|_| SendError::Closed)
    }

    fn ensure_open(&self) -> Result<(), SendError> {
        if self.is_closed() {
            Err(SendError::Closed)
        } else {
            Ok(())
        }
    }

    fn queue_full(&self) -> SendError {
        self.abort(CloseCode::Policy, crate::protocol::SLOW_CLIENT_CLOSE);
        SendError::QueueFull(self.inner.outbound.capacity())
    }

    /// Closes the connection with code 1000 (normal closure) after the messages already
    /// queued have been sent. Later sends fail with [`SendError::Closed`].
    pub fn close(&self) {
        // 1000 is always a valid close code.
        let _ = self.close_with(1000, "");
    }

    /// Closes the connection with a close code and reason, after the messages already
    /// queued have been sent; later sends fail with [`SendError::Closed`]. The code must be
    /// one an endpoint may send (1000-1003, 1007-1014, 3000-4999); the reason is cut to the
    /// 123 bytes a close frame can hold.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("logout")]
    /// async fn logout(conn: Connection) -> Result<NoReply, Error> {
    ///     conn.send(Message::success("bye", 0)).await?;
    ///     // After "bye", the close frame: code 4001, reason "logged out". Nothing queued
    ///     // later is sent (a reply from this handler neither), so it replies nothing.
    ///     conn.close_with(4001, "logged out")?;
    ///     Ok(NoReply)
    /// }
    /// ```
    ///
    /// A code no endpoint may send is refused: `close_with(1005, "")` returns
    /// [`SendError::InvalidCloseCode`].
    pub fn close_with(&self, code: u16, reason: &str) -> Result<(), SendError> {
        if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
            return Err(SendError::InvalidCloseCode(code));
        }
        let close_code = CloseCode::from(code);
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let frame = close_frame(close_code, reason);
        if let Err(Refused::Full(Item::Close(frame))) =
            self.inner.outbound.try_push(Item::Close(frame))
        {
            self.abort_with(frame);
        }
        Ok(())
    }

    /// Whether the connection is closed or closing: nothing more can be sent.
    pub fn is_closed(&self) -> bool {
        self.inner.closing.load(Ordering::Acquire)
            || self.inner.stopped.load(Ordering::Acquire)
            || self.inner.outbound.is_closed()
    }

    /// Whether the connection was stopped (its writer ends).
    pub(crate) fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Waits until the connection is gone (for tasks that serve it in the background).
    ///
    /// ```
    /// use std::time::Duration;
    /// use rohrpost::prelude::*;
    ///
    /// /// Sends the time every second until the client goes away.
    /// #[rohrpost_handler("clock.start")]
    /// async fn clock(conn: Connection) -> NoReply {
    ///     tokio::spawn(async move {
    ///         let mut tick = tokio::time::interval(Duration::from_secs(1));
    ///         loop {
    ///             tokio::select! {
    ///                 _ = conn.closed() => break,
    ///                 _ = tick.tick() => {
    ///                     let now = std::time::SystemTime::now()
    ///                         .duration_since(std::time::UNIX_EPOCH)
    ///                         .map_or(0, |elapsed| elapsed.as_secs());
    ///                     let _ = conn.try_send(Message::success("clock", 0).with_data(json!({ "now": now })));
    ///                 }
    ///             }
    ///         }
    ///     });
    ///     NoReply
    /// }
    /// ```
    pub async fn closed(&self) {
        // The writer stops the connection when it ends, however it ends.
        self.inner.abort.cancelled().await
    }

    /// Joins `group`: messages sent to it reach this connection until it leaves or closes.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("room.join")]
    /// async fn join_room(conn: Connection, groups: Groups, Data(room): Data<String>) -> Result<(), Error> {
    ///     let group = format!("room-{room}");
    ///     conn.join(&group).await?; // fails only when the connection closed meanwhile
    ///     let hello = Message::success("room.joined", 0).with_data(json!({ "room": room }));
    ///     // With Redis down: delivered on this node only, and the error is internal.
    ///     groups.send_except(&group, &hello, &conn).await?;
    ///     Ok(())
    /// }
    ///
    /// #[rohrpost_handler("room.leave")]
    /// async fn leave_room(conn: Connection, Data(room): Data<String>) -> bool {
    ///     conn.leave(&format!("room-{room}")) // whether it was a member
    /// }
    /// ```
    pub async fn join(&self, group: &str) -> Result<(), GroupError> {
        self.inner.groups.join(group, self).await
    }

    /// Leaves `group`; returns whether the connection was a member.
    pub fn leave(&self, group: &str) -> bool {
        self.inner.groups.leave(group, self)
    }

    /// The groups this connection is a member of, sorted.
    pub fn groups(&self) -> Vec<String> {
        let mut groups = self.inner.groups.groups_of(self);
        groups.sort_unstable();
        groups
    }

    /// Whether this connection is a member of `group`.
    pub fn is_member(&self, group: &str) -> bool {
        self.inner.groups.is_member(group, self)
    }

    /// The server's groups, to send to any group or inspect them (handlers can also take
    /// [`Groups`] as an argument).
    pub fn server_groups(&self) -> &Groups {
        &self.inner.groups
    }

    /// Stores a per-connection value of type `T`, replacing the previous one.
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) {
        self.state().insert(value);
    }

    /// The per-connection value of type `T`, if one was stored.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state().get::<T>()
    }

    /// Removes and returns the per-connection value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state().remove::<T>()
    }

    /// Stops the connection at once, sending `code` if the socket still takes it.
    pub(crate) fn abort(&self, code: CloseCode, reason: &str) {
        self.abort_with(close_frame(code, reason));
    }

    fn abort_with(&self, frame: CloseFrame) {
        let mut slot = lock(&self.inner.abort_frame);
        if slot.is_none() {
            *slot = Some(frame);
        }
        drop(slot);
        self.stop();
    }

    /// Stops the connection at once, without a close frame of ours (the client is gone, or
    /// the connection's task ends).
    pub(crate) fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Release);
        self.inner.reader_waker.wake();
        self.inner.writer_waker.wake();
        self.inner.outbound.wake_writer();
        self.inner.abort.cancel();
    }

    /// Asks the reader to stop after the current message (server shutdown).
    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.reader_waker.wake();
    }

    /// For the reader: resolves when the connection is stopped (`true`) or the server shuts
    /// down (`false`).
    pub(crate) fn reader_signal(&self) -> impl std::future::Future<Output = bool> + '_ {
        std::future::poll_fn(move |cx| {
            for attempt in 0..2 {
                if self.inner.stopped.load(Ordering::Acquire) {
                    return Poll::Ready(true);
                }
                if self.inner.shutting_down.load(Ordering::Acquire) {
                    return Poll::Ready(false);
                }
                if attempt == 0 {
                    self.inner.reader_waker.register(cx.waker());
                }
            }
            Poll::Pending
        })
    }

    /// For the writer: resolves when the connection is stopped.
    pub(crate) fn writer_signal(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.stopped_signal(&self.inner.writer_waker)
    }

    /// For the reader while a handler runs: resolves when the connection is stopped.
    pub(crate) fn reader_stopped(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.stopped_signal(&self.inner.reader_waker)
    }

    fn stopped_signal<'a>(
        &'a self,
        waker: &'a AtomicWaker,
    ) -> impl std::future::Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if self.inner.stopped.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            waker.register(cx.waker());
            if self.inner.stopped.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Queues a WebSocket ping unless the queue is full (then the client is not reading, and
    /// the write timeout deals with it).
    pub(crate) fn ping(&self) {
        let _ = self.inner.outbound.try_push(Item::Ping);
    }

    /// The queue the writer drains.
    pub(crate) fn outbound(&self) -> &Outbound {
        &self.inner.outbound
    }

    pub(crate) fn take_abort_frame(&self) -> Option<CloseFrame> {
        lock(&self.inner.abort_frame).take()
    }

    fn state(&self) -> MutexGuard<'_, TypeMap> {
        lock(&self.inner.state)
    }
}

pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.inner.id)
            .field("peer", &self.inner.peer)
            .field("closed", &self.is_closed())
            .finish()
    }
}
