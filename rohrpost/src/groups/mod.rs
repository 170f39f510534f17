//! Groups: named sets of connections that receive the same messages.
//!
//! A connection joins and leaves groups from its handlers ([`Connection::join`]) and leaves
//! all of them when it closes, however it closes. [`Groups::send`] reaches every member from
//! anywhere in the process: a handler, a background task, an HTTP route. A message for a
//! group is serialized once; every member gets the same frame bytes.
//!
//! Groups go through a [`GroupLayer`]: the in-process [`MemoryGroups`] is the default;
//! `RedisGroups` (the `redis` feature) spans several servers. Both keep a [`History`] of
//! chosen groups, so that subscribers that come back get what they missed.

mod history;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use thiserror::Error;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::message::{EmptyMessage, Message};
use crate::notify::{pk_text, Change};
use crate::outbound::Class;
use crate::presence::store::{EventSink, PresenceStore};
use crate::presence::{IdentifyFn, InfoFn, Presence, PresenceCount, PresenceSnapshot, Tracker};
use crate::Connection;

#[cfg(feature = "redis")]
pub use self::redis::{RedisGroups, RedisStatus, DEFAULT_CHANNEL_PREFIX, DEFAULT_REDIS_TIMEOUT};
pub(crate) use history::GroupPatterns;
pub use history::{History, Joined, Position, Since, DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL};
pub use memory::MemoryGroups;

/// Why a group operation failed.
#[derive(Debug, Error)]
pub enum GroupError {
    /// The message had no field at all.
    #[error(transparent)]
    Empty(#[from] EmptyMessage),
    /// A group name must not be empty.
    #[error("a group name cannot be empty")]
    EmptyName,
    /// The connection is closed, so it cannot join a group.
    #[error("the connection is closed")]
    Closed,
    /// The group layer keeps no history, so `ServerBuilder::history` cannot be used with it.
    #[error("this group layer keeps no history of its pushes: use MemoryGroups or RedisGroups for `history`, or leave `history` out")]
    NoHistory,
    /// The group keeps no presence: `ServerBuilder::presence` does not name it.
    #[error("group `{0}` keeps no presence: name it in ServerBuilder::presence")]
    NoPresence(String),
    /// Presence was configured twice on the same groups.
    #[error(
        "presence is already configured on these groups (one ServerBuilder::presence per Groups)"
    )]
    PresenceConfigured,
    /// The group layer's backend failed (for example, Redis is unreachable).
    #[error("group layer backend failed: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// What a group push does for a member whose outbound queue is full
/// ([`ServerBuilder::outbound_queue`](crate::server::ServerBuilder::outbound_queue) pushes): nothing
/// is lost that the application did not agree to lose.
///
/// | policy | when the member's queue is full |
/// | --- | --- |
/// | [`Disconnect`](Policy::Disconnect) (default) | after a short burst grace, the member is closed with 1008 and its reason |
/// | [`Conflate`](Policy::Conflate) | from half the queue on, an update replaces the queued update of the same object |
/// | [`DropOldest`](Policy::DropOldest) | the member's oldest queued volatile push is dropped; never a disconnect |
///
/// Replies to a client's own requests never count against the queue and are never dropped.
///
/// ```
/// use rohrpost::groups::Policy;
/// use rohrpost::notify::Change;
/// use rohrpost::prelude::*;
///
/// # async fn example(groups: rohrpost::Groups) -> Result<(), rohrpost::groups::GroupError> {
/// let cursor = Message::success("cursor", 0).with_data(json!({"x": 10, "y": 20}));
/// groups.send_volatile("board-1", &cursor).await?;
///
/// let update = Message::success("subscription-update", 0).with_data(json!({
///     "type": "update", "group": "todo-1",
///     "object": {"id": 1, "title": "oat milk", "updated_fields": ["title"]},
/// }));
/// groups.send_with("todo-1", &update, Policy::conflate(&json!(1), Change::Update)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Close the member with code 1008 (`outbound queue full: the client is not reading`),
    /// so that it knows it missed messages. A burst may overflow the queue up to twice its
    /// length within the write timeout first.
    #[default]
    Disconnect,
    /// The push is a change to one object, and a member only needs its latest state. Once
    /// the member's queue holds half its length in pushes, an update of the object removes
    /// the queued update of the same object (same group, same primary key) and is appended
    /// at the end, carrying the union of both updates' `updated_fields`; a delete removes
    /// the queued updates of its object; creations and deletions are never dropped. A push
    /// that frees nothing in a full queue falls back to [`Disconnect`](Policy::Disconnect).
    Conflate {
        /// The object's primary key, as in its group name (see [`pk_text`]).
        pk: String,
        /// What happened to the object.
        change: Change,
    },
    /// The push is volatile (a cursor, a ticker, a progress bar): when the member's queue is
    /// full, its oldest queued volatile push is dropped to make room (or this one, when
    /// none is queued). Never a disconnect.
    DropOldest,
}

impl Policy {
    /// [`Policy::Conflate`] for the object with primary key `pk`.
    pub fn conflate(pk: &Value, change: Change) -> Self {
        Policy::Conflate {
            pk: pk_text(pk).into_owned(),
            change,
        }
    }
}

/// A message for a group's members: its frame, serialized once, and its [`Policy`]. A
/// [`GroupLayer`] hands it to each member with [`Connection::try_send_push`].
#[derive(Debug, Clone)]
pub struct Push {
    frame: Utf8Bytes,
    policy: Policy,
    class: Class,
    /// A local connection that does not get it (its sender).
    except: Option<u64>,
}

impl Push {
    /// A push of `frame` (JSON text) to `group` under `policy`.
    ///
    /// ```
    /// use rohrpost::groups::{Policy, Push};
    /// use rohrpost::prelude::*;
    ///
    /// /// The sender's cursor to everyone else on the board: serialized once, dropped
    /// /// rather than queued up for a member that falls behind.
    /// #[rohrpost_handler("cursor.move")]
    /// async fn moved(conn: Connection, groups: Groups, Data(at): Data<Value>) -> Result<NoReply, Error> {
    ///     let frame = Message::success("cursor", 0).with_data(json!({ "who": conn.id(), "at": at })).to_json()?;
    ///     let push = Push::new("board-1", frame, Policy::DropOldest).except(&conn);
    ///     groups.send_push("board-1", push).await?;
    ///     Ok(NoReply)
    /// }
    /// ```
    pub fn new(group: &str, frame: impl Into<Utf8Bytes>, policy: Policy) -> Self {
        let class = match &policy {
            Policy::Disconnect => Class::Plain,
            Policy::DropOldest => Class::Volatile,
            Policy::Conflate { pk, change } => Class::Conflate {
                // A group name cannot hold a NUL byte in any form a client sends (JSON
                // strings escape it), so the pair is unambiguous.
                key: Arc::from(format!("{group}\0{pk}")),
                change: *change,
            },
        };
        Self {
            frame: frame.into(),
            policy,
            class,
            except: None,
        }
    }

    /// The same push for every member but `connection` (of this process).
    pub fn except(mut self, connection: &Connection) -> Self {
        self.except = Some(connection.id());
        self
    }

    /// The local connection that does not get it, if any.
    pub fn excepted(&self) -> Option<u64> {
        self.except
    }

    /// Whether the member with the connection id `id` gets it. By id rather than by
    /// connection: a group's members are keyed by it, and reading it from each connection
    /// would cost a cache line per member of a large group.
    pub(crate) fn reaches(&self, id: u64) -> bool {
        self.except != Some(id)
    }

    /// The JSON text frame.
    pub fn frame(&self) -> &Utf8Bytes {
        &self.frame
    }

    /// What happens when a member's queue is full.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub(crate) fn class(&self) -> &Class {
        &self.class
    }

    /// The same push with another frame (its positioned form).
    pub(crate) fn with_frame(&self, frame: Utf8Bytes) -> Self {
        Self {
            frame,
            policy: self.policy.clone(),
            class: self.class.clone(),
            except: self.except,
        }
    }

    /// A push replayed from a group's history to one subscriber.
    pub(crate) fn replayed(frame: Utf8Bytes) -> Self {
        Self {
            frame,
            policy: Policy::Disconnect,
            class: Class::Plain,
            except: None,
        }
    }
}

/// A number that differs between processes, between calls, and between layers of one
/// process (node ids, stream epochs): the standard library's random hasher keys over the
/// time and the process id. Not for secrets.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Counts of a group layer's local bookkeeping, for metrics and leak checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups with at least one local member.
    pub groups: usize,
    /// Memberships of local connections, summed over all groups.
    pub memberships: usize,
    /// Local connections that are members of at least one group.
    pub connections: usize,
}

/// Where group memberships live and how group messages travel: implement it to plug in
/// another backend (the in-process [`MemoryGroups`] is the default).
///
/// `send` must not wait for slow recipients: queue the push for each member with
/// [`Connection::try_send_push`] and move on.
///
/// A layer that counts what goes through the in-process one:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// use futures_util::future::BoxFuture;
/// use rohrpost::groups::Push;
/// use rohrpost::{Connection, Groups};
/// use rohrpost::groups::{GroupError, GroupLayer, GroupStats, MemoryGroups};
///
/// #[derive(Default)]
/// struct Counted {
///     inner: MemoryGroups,
///     sent: AtomicUsize,
/// }
///
/// impl GroupLayer for Counted {
///     fn join<'a>(&'a self, group: &'a str, connection: &'a Connection) -> BoxFuture<'a, Result<(), GroupError>> {
///         self.inner.join(group, connection)
///     }
///     fn leave(&self, group: &str, connection: &Connection) -> bool {
///         self.inner.leave(group, connection)
///     }
///     fn leave_all(&self, connection: &Connection) {
///         self.inner.leave_all(connection)
///     }
///     fn send<'a>(&'a self, group: &'a str, push: Push) -> BoxFuture<'a, Result<usize, GroupError>> {
///         self.sent.fetch_add(1, Ordering::Relaxed);
///         self.inner.send(group, push)
///     }
///     fn groups_of(&self, connection: &Connection) -> Vec<String> {
///         self.inner.groups_of(connection)
///     }
///     fn member_count(&self, group: &str) -> usize {
///         self.inner.member_count(group)
///     }
///     fn stats(&self) -> GroupStats {
///         self.inner.stats()
///     }
/// }
///
/// let groups = Groups::new(Counted::default());
/// ```
pub trait GroupLayer: Send + Sync + 'static {
    /// Adds `connection` to `group` (joining twice is one membership).
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
    ) -> BoxFuture<'a, Result<(), GroupError>>;

    /// Removes `connection` from `group`; returns whether it was a member.
    fn leave(&self, group: &str, connection: &Connection) -> bool;

    /// Removes `connection` from every group; called when it closes.
    fn leave_all(&self, connection: &Connection);

    /// Queues `push` for every member of `group`; returns how many local members it was
    /// queued for.
    fn send<'a>(&'a self, group: &'a str, push: Push) -> BoxFuture<'a, Result<usize, GroupError>>;

    /// The groups `connection` is a member of.
    fn groups_of(&self, connection: &Connection) -> Vec<String>;

    /// How many local connections are members of `group`.
    fn member_count(&self, group: &str) -> usize;

    /// Whether `connection` is a member of `group` (the default asks
    /// [`groups_of`](Self::groups_of)).
    fn is_member(&self, group: &str, connection: &Connection) -> bool {
        self.groups_of(connection).iter().any(|g| g == group)
    }

    /// The layer's bookkeeping counts.
    fn stats(&self) -> GroupStats;

    /// Keeps the pushes of the groups `history` names, for subscribers that come back
    /// ([`History`]). A layer that cannot keep history says so (the default:
    /// [`GroupError::NoHistory`]).
    fn configure_history(&self, history: History) -> Result<(), GroupError> {
        let _ = history;
        Err(GroupError::NoHistory)
    }

    /// Adds `connection` to `group` as a subscriber that asked for positions (`since`),
    /// queuing what it missed when that can be told. The default joins and recovers
    /// nothing.
    fn join_since<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Joined, GroupError>> {
        Box::pin(async move {
            self.join(group, connection).await?;
            Ok(Joined::without_history(since))
        })
    }

    /// The position of `group`'s stream, when it keeps a history (the default: none).
    fn position<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, GroupError>> {
        let _ = group;
        Box::pin(async { Ok(None) })
    }

    /// Where presence is counted when it spans more than this process (the default: in
    /// this process). Not a public API yet.
    #[doc(hidden)]
    fn presence_store(
        &self,
        presence: &Presence,
        sink: EventSink,
    ) -> Option<Arc<dyn PresenceStore>> {
        let _ = (presence, sink);
        None
    }
}

/// A cheap, cloneable handle to the server's groups, usable from anywhere in the process.
///
/// Create it before the server to keep a handle for background tasks, and give it to the
/// server with [`ServerBuilder::groups`](crate::server::ServerBuilder::groups); or take it as a
/// handler argument.
///
/// ```
/// use rohrpost::prelude::*;
/// use rohrpost::Groups;
///
/// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
/// let groups = Groups::memory();
/// let server = Server::builder().groups(groups.clone()).bind("127.0.0.1:0").await?;
///
/// // Anywhere else: a ticker pushing to everyone in "clock".
/// tokio::spawn(async move {
///     loop {
///         let tick = Message::success("tick", 0).with_data(json!({"now": "…"}));
///         let _ = groups.send("clock", &tick).await;
///         tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///     }
/// });
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Groups {
    layer: Arc<dyn GroupLayer>,
    /// The open connections of this process, by id.
    connections: Arc<std::sync::Mutex<std::collections::HashMap<u64, Connection>>>,
    /// Presence, once configured.
    presence: Arc<std::sync::OnceLock<Arc<Tracker>>>,
}

impl Groups {
    /// Groups in this process only (the default).
    pub fn memory() -> Self {
        Self::new(MemoryGroups::default())
    }

    /// Groups on any [`GroupLayer`].
    pub fn new(layer: impl GroupLayer) -> Self {
        Self {
            layer: Arc::new(layer),
            connections: Arc::default(),
            presence: Arc::default(),
        }
    }

    /// Sends `message` to every member of `group`, serialized once; returns how many local
    /// members it was queued for. Never waits for a slow member: one whose queue is full is
    /// disconnected (close 1008) instead ([`Policy::Disconnect`]).
    pub async fn send(&self, group: &str, message: &Message) -> Result<usize, GroupError> {
        self.send_with(group, message, Policy::Disconnect).await
    }

    /// Sends `message` to every member of `group` under `policy` (see [`Policy`]).
    pub async fn send_with(
        &self,
        group: &str,
        message: &Message,
        policy: Policy,
    ) -> Result<usize, GroupError> {
        let frame = message.to_json()?;
        self.send_push(group, Push::new(group, frame, policy)).await
    }

    /// Sends `message` to every member of `group` but `connection` (its sender, say):
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("chat.say")]
    /// async fn say(conn: Connection, Data(text): Data<String>) -> Result<Json<Value>, Error> {
    ///     let said = Message::push("chat.message", &json!({"text": text})).map_err(Error::internal)?;
    ///     conn.server_groups().send_except("room-1", &said, &conn).await.map_err(Error::internal)?;
    ///     Ok(Json(json!({})))
    /// }
    /// ```
    pub async fn send_except(
        &self,
        group: &str,
        message: &Message,
        connection: &Connection,
    ) -> Result<usize, GroupError> {
        let frame = message.to_json()?;
        let push = Push::new(group, frame, Policy::Disconnect).except(connection);
        self.send_push(group, push).await
    }

    /// Sends `message` to the open connection `id` of this process; returns whether there
    /// was one. Its queue follows [`Policy::Disconnect`].
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// /// A direct message to a connection whose id was kept earlier (`conn.id()`), from
    /// /// anywhere that holds the server's groups.
    /// fn notify_job_done(groups: &Groups, connection_id: u64, job: u64) -> Result<bool, rohrpost::groups::GroupError> {
    ///     groups.send_to(connection_id, &Message::success("job.done", 0).with_data(json!({ "job": job })))
    /// }
    ///
    /// assert!(!notify_job_done(&Groups::memory(), 42, 7)?); // no connection 42 here
    /// # Ok::<(), rohrpost::groups::GroupError>(())
    /// ```
    pub fn send_to(&self, id: u64, message: &Message) -> Result<bool, GroupError> {
        let frame = message.to_json()?;
        let Some(connection) = self.connection(id) else {
            return Ok(false);
        };
        let push = Push::new("", frame, Policy::Disconnect);
        Ok(connection.try_send_push(&push).is_ok())
    }

    /// The open connection `id` of this process, if there is one.
    pub fn connection(&self, id: u64) -> Option<Connection> {
        crate::lock::lock(&self.connections).get(&id).cloned()
    }

    /// Notes an open connection, so that [`send_to`](Self::send_to) finds it.
    pub(crate) fn register(&self, connection: &Connection) {
        crate::lock::lock(&self.connections).insert(connection.id(), connection.clone());
    }

    /// Forgets a connection that closed.
    pub(crate) fn unregister(&self, connection: &Connection) {
        crate::lock::lock(&self.connections).remove(&connection.id());
    }

    /// Whether `connection` is a member of `group`.
    pub fn is_member(&self, group: &str, connection: &Connection) -> bool {
        self.layer.is_member(group, connection)
    }

    /// Sends a volatile message (a cursor, a ticker, progress): a member whose queue is full
    /// loses its oldest queued volatile message instead of its connection
    /// ([`Policy::DropOldest`]).
    pub async fn send_volatile(&self, group: &str, message: &Message) -> Result<usize, GroupError> {
        self.send_with(group, message, Policy::DropOldest).await
    }

    /// Sends an already serialized JSON frame to every member of `group`
    /// ([`Policy::Disconnect`]).
    pub async fn send_json(
        &self,
        group: &str,
        frame: impl Into<Utf8Bytes>,
    ) -> Result<usize, GroupError> {
        self.send_push(group, Push::new(group, frame, Policy::Disconnect))
            .await
    }

    /// Sends a [`Push`] to every member of `group`.
    pub async fn send_push(&self, group: &str, push: Push) -> Result<usize, GroupError> {
        self.layer.send(group, push).await
    }

    /// Adds `connection` to `group`.
    pub async fn join(&self, group: &str, connection: &Connection) -> Result<(), GroupError> {
        self.join_since(group, connection, &Since::Absent)
            .await
            .map(drop)
    }

    /// Adds `connection` to `group` as a subscriber that asked for positions: what it
    /// missed since `since` is queued first when the group's history still holds it (see
    /// [`History`]).
    ///
    /// ```
    /// use rohrpost::groups::Since;
    /// use rohrpost::prelude::*;
    ///
    /// #[derive(Deserialize)]
    /// struct Follow {
    ///     board: String,
    ///     #[serde(default, deserialize_with = "Since::deserialize_present")]
    ///     since: Since,
    /// }
    ///
    /// /// Follows a board, replaying what the client missed since the position it sends.
    /// #[rohrpost_handler("board.follow")]
    /// async fn follow(conn: Connection, groups: Groups, Data(follow): Data<Follow>) -> Result<Value, Error> {
    ///     let joined = groups.join_since(&format!("board-{}", follow.board), &conn, &follow.since).await?;
    ///     // `recovered: false`: what was missed could not be replayed (no history, another
    ///     // epoch, too much missed): the client refetches the board. `null` without a position.
    ///     Ok(json!({ "position": joined.position, "recovered": joined.recovered }))
    /// }
    /// ```
    pub async fn join_since(
        &self,
        group: &str,
        connection: &Connection,
        since: &Since,
    ) -> Result<Joined, GroupError> {
        if group.is_empty() {
            return Err(GroupError::EmptyName);
        }
        if connection.is_closed() {
            return Err(GroupError::Closed);
        }
        let joined = self.layer.join_since(group, connection, since).await?;
        // It may have closed meanwhile, after its groups were left: undo.
        if connection.is_closed() {
            self.layer.leave_all(connection);
            return Err(GroupError::Closed);
        }
        if let Some(tracker) = self.presence.get() {
            tracker.joined(group, connection);
            // The close may have come between the check and the count.
            if connection.is_closed() {
                tracker.left_all(connection, true);
                return Err(GroupError::Closed);
            }
            // So may a leave of this group (another handler of the connection): undo the count.
            if tracker.presence().covers(group) && !self.layer.is_member(group, connection) {
                tracker.left(group, connection, false);
            }
        }
        Ok(joined)
    }

    /// The position of `group`'s stream now, when it keeps a history: a handler that
    /// returns rows with the position they reflect lets a client refetch consistently
    /// with the pushes after it.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("board.load")]
    /// async fn load(groups: Groups, Data(board): Data<String>) -> Result<Value, Error> {
    ///     let group = format!("board-{board}");
    ///     // Read before the rows: subscribing with it as `since` then replays every change
    ///     // the rows may miss.
    ///     let position = groups.position(&group).await?;
    ///     let cards = vec!["a card"]; // the rows, read from the database
    ///     Ok(json!({ "cards": cards, "position": position }))
    /// }
    /// ```
    pub async fn position(&self, group: &str) -> Result<Option<Position>, GroupError> {
        self.layer.position(group).await
    }

    /// Keeps the history `history` names on this handle's layer.
    pub(crate) fn configure_history(&self, history: History) -> Result<(), GroupError> {
        self.layer.configure_history(history)
    }

    /// Removes `connection` from `group`; returns whether it was a member. With presence,
    /// its member leaves at once when this was its last connection in the group.
    pub fn leave(&self, group: &str, connection: &Connection) -> bool {
        if let Some(tracker) = self.presence.get() {
            tracker.left(group, connection, false);
        }
        self.layer.leave(group, connection)
    }

    /// Removes `connection` from every group (presence leaves at once, as with
    /// [`leave`](Self::leave)).
    pub fn leave_all(&self, connection: &Connection) {
        if let Some(tracker) = self.presence.get() {
            tracker.left_all(connection, false);
        }
        self.layer.leave_all(connection)
    }

    /// A connection closed: it leaves every group, and its presence members after the grace.
    pub(crate) fn disconnected(&self, connection: &Connection) {
        if let Some(tracker) = self.presence.get() {
            tracker.left_all(connection, true);
        }
        self.layer.leave_all(connection)
    }

    /// Turns presence on (once per set of groups).
    pub(crate) fn configure_presence(
        &self,
        presence: Presence,
        identify: Option<IdentifyFn>,
        info: Option<InfoFn>,
    ) -> Result<(), GroupError> {
        if self.presence.get().is_some() {
            return Err(GroupError::PresenceConfigured);
        }
        let settings = presence.clone();
        let tracker = Tracker::new(presence, identify, info, |sink| {
            self.layer.presence_store(&settings, sink)
        });
        self.presence
            .set(tracker)
            .map_err(|_| GroupError::PresenceConfigured)
    }

    /// The tracker of `group`'s presence, if it keeps one.
    fn tracker(&self, group: &str) -> Result<&Arc<Tracker>, GroupError> {
        self.presence
            .get()
            .filter(|tracker| tracker.presence().covers(group))
            .ok_or_else(|| GroupError::NoPresence(group.to_owned()))
    }

    /// Who is in `group`, on every node: its connections, its distinct members, and each
    /// member with its info and connection count (see [`presence`](crate::presence)).
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("room.who")]
    /// async fn who(groups: Groups) -> Result<Json<Vec<String>>, Error> {
    ///     let room = groups.presence("room-1").await.map_err(Error::internal)?;
    ///     Ok(Json(room.list.unwrap_or_default().into_iter().map(|m| m.id).collect()))
    /// }
    /// ```
    pub async fn presence(&self, group: &str) -> Result<PresenceSnapshot, GroupError> {
        self.presence_of(group, true).await
    }

    /// Who is in `group`, with or without the list.
    pub(crate) async fn presence_of(
        &self,
        group: &str,
        list: bool,
    ) -> Result<PresenceSnapshot, GroupError> {
        self.tracker(group)?.store().snapshot(group, list).await
    }

    /// How many connections and distinct members `group` has, on every node (cheaper than
    /// [`presence`](Self::presence): no list).
    pub async fn presence_count(&self, group: &str) -> Result<PresenceCount, GroupError> {
        self.tracker(group)?.store().count(group).await
    }

    /// Sends `connection` the join and leave events of `group` (what a subscription with
    /// `"presence": true` asks for) until it leaves the group or closes; returns `false`,
    /// and sends nothing, when the group keeps no presence. Called before the connection
    /// joins, it sees its own join too.
    pub fn watch_presence(&self, group: &str, connection: &Connection) -> bool {
        self.tracker(group)
            .map(|tracker| tracker.watch(group, connection))
            .is_ok()
    }

    /// Stops sending `connection` the join and leave events of `group`.
    pub fn unwatch_presence(&self, group: &str, connection: &Connection) {
        if let Some(tracker) = self.presence.get() {
            tracker.unwatch(group, connection);
        }
    }

    /// The groups `connection` is a member of, in no particular order.
    pub fn groups_of(&self, connection: &Connection) -> Vec<String> {
        self.layer.groups_of(connection)
    }

    /// How many local connections are members of `group`.
    pub fn member_count(&self, group: &str) -> usize {
        self.layer.member_count(group)
    }

    /// The layer's bookkeeping counts (all zero once every connection has closed).
    pub fn stats(&self) -> GroupStats {
        self.layer.stats()
    }
}

impl Default for Groups {
    fn default() -> Self {
        Self::memory()
    }
}

impl fmt::Debug for Groups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Groups")
            .field("stats", &self.stats())
            .finish()
    }
}
