//! The per-connection handle: send, close, state.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::handler::{FromRequest, RequestContext};
use crate::message::{EmptyMessage, Message};
use crate::state::TypeMap;
use crate::Error;

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
///     let _ = conn.send(Message::success("welcome", 0).with_data(json!({ "name": name })));
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

struct Inner {
    id: u64,
    peer: SocketAddr,
    outbound: mpsc::Sender<Outbound>,
    /// Cancelled when the connection must stop at once (not in order with queued messages).
    abort: CancellationToken,
    abort_frame: Mutex<Option<CloseFrame>>,
    state: Mutex<TypeMap>,
}

/// What the connection's writer task sends, in order.
#[derive(Debug)]
pub(crate) enum Outbound {
    Text(Utf8Bytes),
    Close(CloseFrame),
}

/// Why a message could not be queued for a client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The message had no field at all.
    #[error(transparent)]
    Empty(#[from] EmptyMessage),
    /// The connection's outbound queue is full: the client does not read what it is sent.
    /// The connection is closed with code 1008 rather than silently losing the message.
    #[error("the client's outbound queue is full ({0} messages): the client is not reading, so it is being disconnected")]
    QueueFull(usize),
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: SocketAddr,
        outbound: mpsc::Sender<Outbound>,
        abort: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                peer,
                outbound,
                abort,
                abort_frame: Mutex::new(None),
                state: Mutex::new(TypeMap::default()),
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

    /// Queues `message` for the client without waiting.
    ///
    /// Messages are delivered in the order they are queued. If the client does not read and
    /// its outbound queue ([`ServerBuilder::outbound_queue`](crate::ServerBuilder::outbound_queue))
    /// is full, the message is not queued, [`SendError::QueueFull`] is returned and the
    /// connection is closed with code 1008: nothing is dropped without the sender knowing.
    pub fn send(&self, message: Message) -> Result<(), SendError> {
        self.send_text(message.to_json()?)
    }

    /// Queues an already serialized JSON text frame (serialize once, send to many).
    pub fn send_text(&self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        if self.inner.abort.is_cancelled() {
            return Err(SendError::Closed);
        }
        match self.inner.outbound.try_send(Outbound::Text(text.into())) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(mpsc::error::TrySendError::Full(_)) => {
                let capacity = self.inner.outbound.max_capacity();
                self.abort(
                    CloseCode::Policy,
                    "outbound queue full: the client is not reading",
                );
                Err(SendError::QueueFull(capacity))
            }
        }
    }

    /// Queues a reply, waiting for room in the queue: a client that sends requests without
    /// reading the replies is simply not read from until it does.
    pub(crate) async fn send_reply(&self, text: String) -> Result<(), SendError> {
        tokio::select! {
            sent = self.inner.outbound.send(Outbound::Text(text.into())) => {
                sent.map_err(|_| SendError::Closed)
            }
            _ = self.inner.abort.cancelled() => Err(SendError::Closed),
        }
    }

    /// Closes the connection with code 1000 (normal closure) after the messages already
    /// queued have been sent.
    pub fn close(&self) {
        self.close_with(1000, "");
    }

    /// Closes the connection with a close code and reason, after the messages already
    /// queued have been sent. The reason is cut to the 123 bytes a close frame can hold.
    pub fn close_with(&self, code: u16, reason: &str) {
        let frame = close_frame(CloseCode::from(code), reason);
        if let Err(mpsc::error::TrySendError::Full(Outbound::Close(frame))) =
            self.inner.outbound.try_send(Outbound::Close(frame))
        {
            self.abort_with(frame);
        }
    }

    /// Whether the connection has been closed or is closing at once.
    pub fn is_closed(&self) -> bool {
        self.inner.abort.is_cancelled() || self.inner.outbound.is_closed()
    }

    /// Waits until the connection is gone (for tasks that serve it in the background).
    pub async fn closed(&self) {
        tokio::select! {
            _ = self.inner.abort.cancelled() => {}
            _ = self.inner.outbound.closed() => {}
        }
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
        self.inner.abort.cancel();
    }

    pub(crate) fn take_abort_frame(&self) -> Option<CloseFrame> {
        lock(&self.inner.abort_frame).take()
    }

    pub(crate) fn abort_token(&self) -> &CancellationToken {
        &self.inner.abort
    }

    fn state(&self) -> MutexGuard<'_, TypeMap> {
        lock(&self.inner.state)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a map, an
/// optional frame) is still consistent, so keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

impl FromRequest for Connection {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        Ok(cx.connection.clone())
    }
}
