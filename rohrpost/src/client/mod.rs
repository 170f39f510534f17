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
//!   webpki-roots; `ClientBuilder::tls_config` for a private CA or client certificates).
//! - [`Client::state`] tells whether it is connected, reconnecting or closed.
//! - Subscriptions resume: the client remembers the last position of each group with
//!   history and re-subscribes from it (`since`), so the server replays what was missed;
//!   when it cannot, [`Subscription::next`] yields [`ClientError::Missed`] once.

mod builder;
mod driver;
mod error;
mod pushes;
mod requests;
mod subscription;
mod transport;

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

pub use self::builder::ClientBuilder;
pub use self::error::ClientError;
use self::pushes::Listener;
pub use self::pushes::{Pushed, DEFAULT_PUSH_BACKLOG};
use self::subscription::Delivery;
pub use self::subscription::{Event, Member, Subscription, Update};
use crate::presence::PresenceSnapshot;
use crate::subscribe::GroupObject;

/// The rustls version the client uses, to build a [`ClientBuilder::tls_config`] with.
#[cfg(feature = "client-tls")]
pub use rustls;

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

/// What a [`Client`] asks of its driver.
#[derive(Debug)]
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
        /// Whether the group's join and leave events are wanted too.
        presence: bool,
        updates: mpsc::UnboundedSender<Delivery>,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Unsubscribe {
        key: u64,
        group: String,
    },
    Listen(Listener),
    Close,
}

impl Client {
    /// Settings for a client of the endpoint at `url` (`ws://host:port/rohrpost/`).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.into())
    }

    fn new(
        commands: mpsc::UnboundedSender<Command>,
        state: watch::Receiver<ConnectionState>,
        next_id: Arc<AtomicU64>,
        call_timeout: Duration,
    ) -> Self {
        Client {
            shared: Arc::new(Shared {
                commands,
                state,
                next_id,
                call_timeout,
            }),
        }
    }

    /// Connects with the default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Client, ClientError> {
        Self::builder(url).connect().await
    }

    /// Sends `{"id", "type", "data"}` and resolves with the reply's `data` (`null` when it
    /// has none), or fails with its `error`, a timeout, or a dropped connection. The reply is
    /// the message with the call's id and type (`pong` for `ping`), as rohrpost servers
    /// send it: a push that happens to carry the same id is not taken for it.
    ///
    /// ```
    /// use rohrpost::client::{Client, ClientError};
    /// use rohrpost::prelude::*;
    ///
    /// async fn greet(Data(name): Data<String>) -> Result<String, Error> {
    ///     if name.is_empty() {
    ///         return Err(Error::new("Say who.").with_data(json!({ "field": "name" })));
    ///     }
    ///     Ok(format!("hello {name}"))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .handlers(Handlers::new().handler("greet", greet))
    ///     .bind("127.0.0.1:0")
    ///     .await?
    ///     .spawn();
    /// let client = Client::connect(server.url()).await?;
    /// assert_eq!(client.call("greet", "ada").await?, json!("hello ada"));
    /// match client.call("greet", "").await {
    ///     Err(ClientError::Reply { error, data }) => {
    ///         assert_eq!(error, "Say who.");
    ///         assert_eq!(data, Some(json!({ "field": "name" })));
    ///     }
    ///     other => panic!("expected the error reply, got {other:?}"),
    /// }
    /// client.close().await;
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
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
        self.subscribe_as(object, false).await
    }

    /// Subscribes to `object`'s group with `"presence": true`: beside its updates, the
    /// subscription gets the group's joins and leaves ([`Subscription::next_event`]), when
    /// the server keeps presence for it.
    ///
    /// ```no_run
    /// use rohrpost::client::{group_object, Client, Event};
    /// use serde_json::Value;
    ///
    /// # async fn run() -> Result<(), rohrpost::client::ClientError> {
    /// let client = Client::connect("ws://127.0.0.1:8000/rohrpost/?user=ada").await?;
    /// let here = client.presence(group_object("todo", 1)).await?;
    /// println!("{} looking at todo 1", here.members);
    /// let mut todo = client.subscribe_with_presence::<Value>(group_object("todo", 1)).await?;
    /// while let Some(event) = todo.next_event().await {
    ///     match event? {
    ///         Event::Join(member) => println!("{} opened it", member.id),
    ///         Event::Leave(member) => println!("{} left", member.id),
    ///         Event::Update(update) => println!("{:?}", update.object),
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_with_presence<T: DeserializeOwned>(
        &self,
        object: GroupObject,
    ) -> Result<Subscription<T>, ClientError> {
        self.subscribe_as(object, true).await
    }

    /// Who is in `object`'s group: the server's `presence` request.
    pub async fn presence(&self, object: GroupObject) -> Result<PresenceSnapshot, ClientError> {
        self.call_as("presence", object).await
    }

    async fn subscribe_as<T: DeserializeOwned>(
        &self,
        object: GroupObject,
        presence: bool,
    ) -> Result<Subscription<T>, ClientError> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (updates, received) = mpsc::unbounded_channel();
        let (reply, replied) = oneshot::channel();
        self.command(Command::Subscribe {
            id,
            object,
            presence,
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

    /// Every message that is neither a reply to a call nor a subscription update (what a
    /// server pushes on its own), whole: first those kept since the client connected (the
    /// last [`push_backlog`](ClientBuilder::push_backlog), 1,000 by default), then the
    /// ones that come. Any number of listeners may listen; each gets every message.
    ///
    /// ```
    /// use rohrpost::client::Client;
    /// use rohrpost::prelude::*;
    ///
    /// async fn hello(conn: Connection) -> NoReply {
    ///     let news = Message::success("news", 0).with_data(json!({ "headline": "hi" }));
    ///     let _ = conn.send(news).await;
    ///     NoReply
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder()
    ///     .handlers(Handlers::new().handler("hello", hello))
    ///     .bind("127.0.0.1:0")
    ///     .await?
    ///     .spawn();
    /// let client = Client::connect(server.url()).await?;
    /// let mut pushes = client.incoming();
    /// client.send("hello", ())?;
    /// let push = pushes.recv().await.expect("the server's push");
    /// assert_eq!(push["type"], "news");
    /// assert_eq!(push["data"]["headline"], "hi");
    /// client.close().await;
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn incoming(&self) -> mpsc::UnboundedReceiver<Value> {
        self.listen(None)
    }

    /// The pushes of one `type`, their `data` decoded as `T`: first those kept since the
    /// client connected, then the ones that come.
    ///
    /// ```no_run
    /// use rohrpost::client::Client;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Said { room: String, user: String, text: String }
    ///
    /// # async fn run() -> Result<(), rohrpost::client::ClientError> {
    /// let client = Client::connect("ws://127.0.0.1:8000/rohrpost/?user=ada").await?;
    /// let mut said = client.on::<Said>("chat.message");
    /// while let Some(message) = said.next().await {
    ///     let message = message?;
    ///     println!("[{}] {}: {}", message.room, message.user, message.text);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn on<T: DeserializeOwned>(&self, message_type: &str) -> Pushed<T> {
        Pushed {
            receiver: self.listen(Some(message_type.to_owned())),
            kind: PhantomData,
        }
    }

    fn listen(&self, message_type: Option<String>) -> mpsc::UnboundedReceiver<Value> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let _ = self.command(Command::Listen(Listener {
            message_type,
            sender,
        }));
        receiver
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        *self.shared.state.borrow()
    }

    /// A watch of the connection's state, to follow its changes.
    ///
    /// ```
    /// use rohrpost::client::{Client, ConnectionState};
    ///
    /// /// Logs the state whenever this task sees it change. A watch keeps only the latest
    /// /// state: a drop and reconnection quicker than the task may show as `Connected` alone.
    /// async fn follow(client: Client) {
    ///     let mut states = client.state_changes();
    ///     while states.changed().await.is_ok() {
    ///         let state = *states.borrow();
    ///         match state {
    ///             // One per attempt: the first is the drop.
    ///             ConnectionState::Reconnecting { attempt: 1 } => tracing::warn!("offline"),
    ///             ConnectionState::Reconnecting { attempt } => tracing::debug!(attempt, "still offline"),
    ///             ConnectionState::Connected => tracing::info!("online"),
    ///             ConnectionState::Closed => break,
    ///         }
    ///     }
    /// }
    /// ```
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
