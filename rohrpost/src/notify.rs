//! Change notifications: the original's `NotifyOnCreate`, `NotifyOnUpdate`, `NotifyOnDelete`
//! and `NotifyOnChange`, for any Rust type.
//!
//! When an object is created, updated or deleted, one group gets
//! `{"id": <generated>, "type": "subscription-update", "data": {"type": "create|update|delete",
//! "group": <group>, "object": <data>}}`.
//!
//! Implement [`Notify`] (or derive it, see [`derive@Notify`]) to say which group and which
//! data; then send with [`Groups::notify`] at once, or through an [`Outbox`] (or, with the
//! `sqlx` feature, a `Transaction`) that sends only when the database transaction commits.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::groups::{GroupError, Groups, Policy};
use crate::message::Message;

/// What happened to the object; in JSON `"create"`, `"update"` or `"delete"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// It was created.
    Create,
    /// It was updated.
    Update,
    /// It was deleted.
    Delete,
}

impl Change {
    /// `"create"`, `"update"` or `"delete"`, as in the message's `data.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Create => "create",
            Change::Update => "update",
            Change::Delete => "delete",
        }
    }
}

/// Derives [`Notify`](trait@Notify) for a struct with named fields.
///
/// | attribute | meaning | default |
/// | --- | --- | --- |
/// | `pk = "field"` | the primary-key field | `id` |
/// | `name = "todo"` | the type name in the default group name | the lower-cased type name |
/// | `group = "todo-{pk}"` | a group-name template (`{pk}` only) | `<name>-<pk>` |
/// | `group_name = "path"` | a `fn(&Self, Change) -> String`; beats `group` | |
/// | `data = "path"` | a `fn(&Self, Option<&[&str]>, Change) -> Value`; beats `serialize` | |
/// | `serialize` | push the type's own `Serialize` form | `{"id": pk}` |
/// | `always_send = false` | skip updates whose updated fields are not in the data | `true` |
/// | `conflate` | a subscriber that falls behind gets only the latest update of an object ([`Policy::Conflate`]); not with `data` | off: the subscriber is disconnected |
/// | `crate = "path"` | where the rohrpost crate is, when renamed or re-exported | `"::rohrpost"` |
///
/// ```
/// use rohrpost::notify::{Change, Notify};
/// use serde::Serialize;
///
/// #[derive(Serialize, Notify)]
/// #[rohrpost(serialize)]
/// struct Todo { id: i64, title: String }
///
/// #[derive(Notify)]
/// #[rohrpost(pk = "slug", group = "board-{pk}")]
/// struct Board { slug: String }
///
/// let todo = Todo { id: 1, title: "milk".into() };
/// assert_eq!(todo.group_name(Change::Create), "todo-1");
/// assert_eq!(todo.notification_data(None, Change::Create)["title"], "milk");
/// assert_eq!(Board { slug: "main".into() }.group_name(Change::Update), "board-main");
/// ```
pub use rohrpost_macros::Notify;

/// An object whose changes are pushed to a group.
///
/// Every method has the original's default, so a type needs only [`pk`](Notify::pk):
///
/// - group: [`group_name`](Notify::group_name), by default [`type_name`](Notify::type_name)
///   (the lower-cased type name), a dash and the primary key: `todo-1`;
/// - data: [`notification_data`](Notify::notification_data), by default `{"id": pk}`.
///
/// ```
/// use rohrpost::notify::{Change, Notify};
/// use serde_json::{json, Value};
///
/// struct Todo { id: i64, title: String }
///
/// impl Notify for Todo {
///     fn pk(&self) -> Value { json!(self.id) }
///     fn notification_data(&self, _: Option<&[&str]>, _: Change) -> Value {
///         json!({ "id": self.id, "title": self.title })
///     }
/// }
///
/// let todo = Todo { id: 1, title: "milk".into() };
/// assert_eq!(todo.group_name(Change::Create), "todo-1");
/// ```
pub trait Notify {
    /// The primary key.
    fn pk(&self) -> Value;

    /// The lower-cased type name used by the default group name (`Todo` → `todo`).
    fn type_name(&self) -> Cow<'static, str> {
        let full = std::any::type_name::<Self>();
        let name = full.split('<').next().unwrap_or(full);
        let name = name.rsplit("::").next().unwrap_or(name);
        Cow::Owned(name.to_lowercase())
    }

    /// The group that gets the notification (the original's `get_group_name`).
    fn group_name(&self, change: Change) -> String {
        let _ = change;
        format!("{}-{}", self.type_name(), pk_text(&self.pk()))
    }

    /// The pushed object (the original's `get_push_notification_data`); `updated_fields` are
    /// the fields the save named, if it named any.
    fn notification_data(&self, updated_fields: Option<&[&str]>, change: Change) -> Value {
        let _ = (updated_fields, change);
        let mut object = Map::new();
        object.insert("id".into(), self.pk());
        Value::Object(object)
    }

    /// Whether an update is pushed even when none of its updated fields is among the keys of
    /// the pushed data (the original's `rohrpost_always_send`; default `true`).
    fn always_send(&self) -> bool {
        true
    }

    /// Whether a subscriber that falls behind may get only the latest update of this object
    /// instead of being disconnected ([`Policy::Conflate`]; default `false`). Say `true`
    /// only where each update pushes the whole object, so that the latest one holds all
    /// the earlier ones did.
    fn conflate(&self) -> bool {
        false
    }
}

/// A primary key as it appears in a group name: strings without quotes.
pub fn pk_text(pk: &Value) -> Cow<'_, str> {
    match pk {
        Value::String(text) => Cow::Borrowed(text),
        other => Cow::Owned(other.to_string()),
    }
}

/// Fills `{pk}` in a group-name template such as `"attribute-example-{pk}"`.
pub fn fill_template(template: &str, pk: &Value) -> String {
    template.replace("{pk}", &pk_text(pk))
}

/// One notification, built and serialized, ready to send to its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// The group to send to.
    pub group: String,
    /// The `subscription-update` message.
    pub message: Message,
    /// What it does for a subscriber whose queue is full: [`Policy::Conflate`] where the
    /// type opts in ([`Notify::conflate`]), else [`Policy::Disconnect`]. Set it to choose
    /// per send.
    pub policy: Policy,
}

static NEXT_NOTIFICATION_ID: AtomicU64 = AtomicU64::new(1);

/// The id of the next `subscription-update` this process sends (rohrpost.js routes by
/// type, so ids only need to differ).
pub(crate) fn next_push_id() -> u64 {
    NEXT_NOTIFICATION_ID.fetch_add(1, Ordering::Relaxed)
}

impl Notification {
    /// Builds the notification of `change` to `object`, following the original's rules;
    /// `None` when an update is skipped because [`Notify::always_send`] is `false` and none
    /// of `updated_fields` is among the pushed data's keys.
    ///
    /// ```
    /// use rohrpost::groups::Policy;
    /// use rohrpost::notify::{Change, Notification, Notify};
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize, Notify)]
    /// #[rohrpost(serialize, always_send = false)]
    /// struct Cursor { id: i64, x: i32, y: i32 }
    ///
    /// let cursor = Cursor { id: 3, x: 10, y: 20 };
    /// let mut notification = Notification::new(&cursor, Change::Update, Some(&["x"])).unwrap();
    /// assert_eq!(notification.group, "cursor-3");
    /// notification.policy = Policy::DropOldest; // a cursor may skip positions
    /// # let _ = notification;
    ///
    /// // An update of fields the pushed data does not hold is skipped.
    /// assert!(Notification::new(&cursor, Change::Update, Some(&["colour"])).is_none());
    /// ```
    pub fn new<T: Notify + ?Sized>(
        object: &T,
        change: Change,
        updated_fields: Option<&[&str]>,
    ) -> Option<Self> {
        let group = object.group_name(change);
        let mut data = object.notification_data(updated_fields, change);
        let named = updated_fields.filter(|fields| !fields.is_empty());
        if let (Some(fields), Value::Object(map)) = (named, &mut data) {
            if !map.contains_key("updated_fields") {
                map.insert("updated_fields".into(), fields.iter().copied().collect());
            }
        }
        if let (Change::Update, Some(fields), false) = (change, named, object.always_send()) {
            let keys = data.as_object();
            let any_named = fields
                .iter()
                .any(|field| keys.is_some_and(|keys| keys.contains_key(*field)));
            if !any_named {
                return None;
            }
        }
        let mut body = Map::new();
        body.insert("type".into(), change.as_str().into());
        body.insert("group".into(), group.clone().into());
        body.insert("object".into(), data);
        let id = next_push_id();
        let message = Message::success("subscription-update", id).with_data(Value::Object(body));
        let policy = if object.conflate() {
            Policy::conflate(&object.pk(), change)
        } else {
            Policy::Disconnect
        };
        Some(Self {
            group,
            message,
            policy,
        })
    }
}

impl Groups {
    /// Sends the notification of `change` to `object` at once (outside a transaction).
    /// Returns how many local members got it (0 when skipped).
    ///
    /// ```
    /// use rohrpost::notify::{Change, Notify};
    /// use rohrpost::Groups;
    /// use serde::Serialize;
    ///
    /// #[derive(Serialize, Notify)]
    /// #[rohrpost(serialize)]
    /// struct Todo { id: i64, title: String }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), rohrpost::groups::GroupError> {
    /// let groups = Groups::memory();
    /// let todo = Todo { id: 1, title: "oat milk".into() };
    /// // To every subscriber of `todo-1`: {"id": …, "type": "subscription-update", "data":
    /// // {"type": "update", "group": "todo-1", "object": {"id": 1, "title": "oat milk",
    /// // "updated_fields": ["title"]}}}
    /// let reached = groups.notify(&todo, Change::Update, Some(&["title"])).await?;
    /// assert_eq!(reached, 0); // nobody subscribed yet
    /// # Ok(()) }
    /// ```
    pub async fn notify<T: Notify + ?Sized>(
        &self,
        object: &T,
        change: Change,
        updated_fields: Option<&[&str]>,
    ) -> Result<usize, GroupError> {
        match Notification::new(object, change, updated_fields) {
            Some(notification) => self.send_notification(notification).await,
            None => Ok(0),
        }
    }

    /// Sends a built notification to its group, under its policy.
    pub async fn send_notification(&self, notification: Notification) -> Result<usize, GroupError> {
        let Notification {
            group,
            message,
            policy,
        } = notification;
        self.send_with(&group, &message, policy).await
    }
}

/// Notifications held back until the surrounding work commits: [`commit`](Outbox::commit)
/// sends them in order, dropping the outbox discards them (a rollback).
///
/// ```
/// # use rohrpost::notify::{Change, Notify, Outbox};
/// # use rohrpost::Groups;
/// # use serde_json::{json, Value};
/// # struct Todo { id: i64 }
/// # impl Notify for Todo { fn pk(&self) -> Value { json!(self.id) } }
/// # async fn example(groups: Groups) -> Result<(), rohrpost::groups::GroupError> {
/// let mut outbox = Outbox::new(groups);
/// outbox.created(&Todo { id: 1 });
/// // … the database work; on error, return early and the outbox is dropped unsent …
/// outbox.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "an outbox sends nothing until `commit` is awaited"]
pub struct Outbox {
    groups: Groups,
    pending: Vec<Notification>,
}

impl Outbox {
    /// An empty outbox for `groups`.
    pub fn new(groups: Groups) -> Self {
        Self {
            groups,
            pending: Vec::new(),
        }
    }

    /// Holds back the notification of `change` to `object`.
    pub fn push<T: Notify + ?Sized>(
        &mut self,
        object: &T,
        change: Change,
        updated_fields: Option<&[&str]>,
    ) {
        self.pending
            .extend(Notification::new(object, change, updated_fields));
    }

    /// Holds back a `create` notification.
    pub fn created<T: Notify + ?Sized>(&mut self, object: &T) {
        self.push(object, Change::Create, None);
    }

    /// Holds back an `update` notification naming the updated fields (`&[]` for none).
    pub fn updated<T: Notify + ?Sized>(&mut self, object: &T, updated_fields: &[&str]) {
        self.push(object, Change::Update, Some(updated_fields));
    }

    /// Holds back a `delete` notification.
    pub fn deleted<T: Notify + ?Sized>(&mut self, object: &T) {
        self.push(object, Change::Delete, None);
    }

    /// Holds back a notification built elsewhere (with a policy of its own, say).
    pub fn add(&mut self, notification: Notification) {
        self.pending.push(notification);
    }

    /// The notifications held back so far.
    pub fn pending(&self) -> &[Notification] {
        &self.pending
    }

    /// Sends every held-back notification, in order. All are attempted; the first error
    /// is returned.
    pub async fn commit(self) -> Result<(), GroupError> {
        let mut result = Ok(());
        for notification in self.pending {
            let sent = self.groups.send_notification(notification).await;
            if let (Err(error), Ok(())) = (sent, &result) {
                result = Err(error);
            }
        }
        result
    }
}

#[cfg(feature = "sqlx")]
pub use self::sqlx_transaction::Transaction;

#[cfg(feature = "sqlx")]
mod sqlx_transaction {
    use std::ops::{Deref, DerefMut};

    use super::{Change, Notify, Outbox};
    use crate::groups::Groups;

    /// An sqlx transaction whose notifications go out when it commits and are dropped when
    /// it rolls back (or is dropped): the original's `on_commit` delivery.
    ///
    /// It dereferences to the database connection, so queries run on `&mut *tx` as on an
    /// sqlx transaction.
    ///
    /// ```no_run
    /// use rohrpost::notify::{Notify, Transaction};
    /// # use serde_json::{json, Value};
    /// # struct Todo { id: i64, title: String }
    /// # impl Notify for Todo { fn pk(&self) -> Value { json!(self.id) } }
    ///
    /// # async fn rename(pool: &sqlx::SqlitePool, groups: rohrpost::Groups) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = Transaction::begin(pool, groups).await?;
    /// sqlx::query("UPDATE todos SET title = $1 WHERE id = $2")
    ///     .bind("oat milk")
    ///     .bind(1_i64)
    ///     .execute(&mut *tx)
    ///     .await?;
    /// tx.updated(&Todo { id: 1, title: "oat milk".into() }, &["title"]);
    /// tx.commit().await?; // now the subscribers of todo-1 hear of it
    /// # Ok(()) }
    /// ```
    #[must_use = "a transaction rolls back, and sends nothing, unless `commit` is awaited"]
    pub struct Transaction<'c, DB: sqlx::Database> {
        inner: sqlx::Transaction<'c, DB>,
        outbox: Outbox,
    }

    impl<DB: sqlx::Database> Transaction<'static, DB> {
        /// Begins a transaction on a connection from `pool`.
        pub async fn begin(pool: &sqlx::Pool<DB>, groups: Groups) -> Result<Self, sqlx::Error> {
            Ok(Self::wrap(pool.begin().await?, groups))
        }
    }

    impl<'c, DB: sqlx::Database> Transaction<'c, DB> {
        /// Wraps a transaction begun elsewhere.
        ///
        /// ```
        /// use rohrpost::notify::{Notify, Transaction};
        /// use sqlx::{Connection, SqliteConnection};
        /// # use serde_json::{json, Value};
        /// # struct Todo { id: i64 }
        /// # impl Notify for Todo { fn pk(&self) -> Value { json!(self.id) } }
        ///
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
        /// let mut db = SqliteConnection::connect("sqlite::memory:").await?;
        /// sqlx::query("CREATE TABLE todos (id INTEGER PRIMARY KEY, title TEXT)")
        ///     .execute(&mut db)
        ///     .await?;
        /// // Begun by code that knows nothing of rohrpost:
        /// let begun = db.begin().await?;
        /// let mut tx = Transaction::wrap(begun, rohrpost::Groups::memory());
        /// sqlx::query("INSERT INTO todos (id, title) VALUES (1, 'milk')")
        ///     .execute(&mut *tx)
        ///     .await?;
        /// tx.created(&Todo { id: 1 });
        /// tx.commit().await?; // committed, then `todo-1` hears of it
        /// # Ok(()) }
        /// ```
        pub fn wrap(transaction: sqlx::Transaction<'c, DB>, groups: Groups) -> Self {
            Self {
                inner: transaction,
                outbox: Outbox::new(groups),
            }
        }

        /// Holds back the notification of `change` to `object` until the commit.
        pub fn notify<T: Notify + ?Sized>(
            &mut self,
            object: &T,
            change: Change,
            updated_fields: Option<&[&str]>,
        ) {
            self.outbox.push(object, change, updated_fields);
        }

        /// Holds back a `create` notification until the commit.
        pub fn created<T: Notify + ?Sized>(&mut self, object: &T) {
            self.outbox.created(object);
        }

        /// Holds back an `update` notification until the commit.
        pub fn updated<T: Notify + ?Sized>(&mut self, object: &T, updated_fields: &[&str]) {
            self.outbox.updated(object, updated_fields);
        }

        /// Holds back a `delete` notification until the commit.
        pub fn deleted<T: Notify + ?Sized>(&mut self, object: &T) {
            self.outbox.deleted(object);
        }

        /// Commits, then sends the held-back notifications. A failed commit sends nothing.
        /// A failure to send (a group layer's backend) is logged: the data is committed.
        pub async fn commit(self) -> Result<(), sqlx::Error> {
            self.inner.commit().await?;
            if let Err(error) = self.outbox.commit().await {
                tracing::error!(%error, "committed, but sending change notifications failed");
            }
            Ok(())
        }

        /// Rolls back; the held-back notifications are dropped.
        pub async fn rollback(self) -> Result<(), sqlx::Error> {
            self.inner.rollback().await
        }
    }

    impl<DB: sqlx::Database> std::fmt::Debug for Transaction<'_, DB> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Transaction")
                .field("pending", &self.outbox.pending())
                .finish_non_exhaustive()
        }
    }

    impl<DB: sqlx::Database> Deref for Transaction<'_, DB> {
        type Target = DB::Connection;

        fn deref(&self) -> &DB::Connection {
            &self.inner
        }
    }

    impl<DB: sqlx::Database> DerefMut for Transaction<'_, DB> {
        fn deref_mut(&mut self) -> &mut DB::Connection {
            &mut self.inner
        }
    }
}
