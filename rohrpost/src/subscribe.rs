//! Subscriptions as rohrpost.js makes them: `subscribe`/`unsubscribe` to a group object.
//!
//! rohrpost.js sends `{"id": 3, "type": "subscribe", "auth_jwt": "<token>", "data": {"type":
//! "todo", "id": 1}}`; the group object `{type, id}` names the group `"todo-1"`. The reply is
//! `{"id": 3, "type": "subscribe", "data": {"group": "todo-1"}}`, or
//! `{"id": 3, "type": "subscribe", "error": "ACCESS_DENIED"}` when the authorization hook
//! refuses. `unsubscribe` likewise, replying `{"id": 4, "type": "unsubscribe"}`.
//!
//! A group object may carry `since` (`null`, or `{"offset", "epoch"}`) to resume a group
//! with history: see [`History`](crate::groups::History); and `"presence": true` to get the
//! join and leave events of a group with presence: see [`presence`](crate::presence).
//! Without them, the bytes are the original's.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::groups::{GroupError, Position, Since};
use crate::presence::PresenceSnapshot;
use crate::{Connection, Data, Error, Handlers, Json, Request};

/// What rohrpost.js subscribes to: `{"type": "todo", "id": 1}`, the group `"todo-1"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct GroupObject {
    /// The object's type, e.g. `"todo"`.
    #[serde(rename = "type")]
    pub object_type: String,
    /// The object's id: a number or a string.
    pub id: Value,
}

impl GroupObject {
    /// The group name: type, a dash, and the id (a string id without its quotes).
    ///
    /// ```
    /// use rohrpost::subscribe::GroupObject;
    /// use serde_json::json;
    ///
    /// let todo = GroupObject { object_type: "todo".into(), id: json!(1) };
    /// assert_eq!(todo.group_name(), "todo-1");
    /// let named = GroupObject { object_type: "board".into(), id: json!("main") };
    /// assert_eq!(named.group_name(), "board-main");
    /// ```
    pub fn group_name(&self) -> String {
        format!("{}-{}", self.object_type, crate::notify::pk_text(&self.id))
    }
}

/// The token rohrpost.js sends beside `data`, in the top-level `auth_jwt` field.
pub fn auth_token(request: &Request) -> Option<&str> {
    request.fields.get("auth_jwt").and_then(Value::as_str)
}

/// One subscription attempt, as the authorization hook sees it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The connection asking.
    pub connection: Connection,
    /// The token from `auth_jwt`, if any.
    pub token: Option<String>,
    /// The object to subscribe to.
    pub object: GroupObject,
    /// The group it names.
    pub group: String,
    /// `true` for `subscribe` and `presence`, `false` for `unsubscribe`.
    pub subscribing: bool,
    /// What is asked.
    pub action: Action,
}

/// What a connection asks of a group object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
    /// `presence`: who is in the group.
    Presence,
}

type Authorize = Arc<dyn Fn(Attempt) -> BoxFuture<'static, bool> + Send + Sync>;

/// A `subscribe` request's data: the group object, and `since` if the client sent it.
#[derive(Debug, Deserialize)]
struct SubscribeData {
    #[serde(flatten)]
    object: GroupObject,
    #[serde(default, deserialize_with = "Since::deserialize_present")]
    since: Since,
    /// `"presence": true`: the join and leave events of the group too.
    #[serde(default)]
    presence: bool,
}

/// A `presence` request's data: the group object, and `"list": false` for counts only.
#[derive(Debug, Deserialize)]
struct PresenceData {
    #[serde(flatten)]
    object: GroupObject,
    #[serde(default = "yes")]
    list: bool,
}

fn yes() -> bool {
    true
}

/// The ready-made, opt-in `subscribe`/`unsubscribe` pair, with an authorization hook that
/// decides whether a connection may join a group.
///
/// ```
/// use rohrpost::prelude::*;
/// use rohrpost::subscribe::Subscriptions;
///
/// # async fn start() -> Result<(), rohrpost::server::ServerError> {
/// // Everyone with the right token may subscribe to anything:
/// let handlers = Handlers::collect().merge(Subscriptions::token("hunter2").handlers());
///
/// // Or decide per connection and group:
/// let handlers = Handlers::collect().merge(
///     Subscriptions::new(|attempt| async move {
///         attempt.object.object_type == "todo" && attempt.token.is_some()
///     })
///     .handlers(),
/// );
/// let server = Server::builder().handlers(handlers).bind("127.0.0.1:0").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Subscriptions {
    authorize: Authorize,
    presence: bool,
}

impl Subscriptions {
    /// Subscriptions allowed when `authorize` resolves to `true`.
    pub fn new<F, Fut>(authorize: F) -> Self
    where
        F: Fn(Attempt) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self {
            authorize: Arc::new(move |attempt| Box::pin(authorize(attempt))),
            presence: false,
        }
    }

    /// Adds the `presence` request to [`handlers`](Self::handlers): who is in a group,
    /// authorized by the same hook as `subscribe` (see [`presence`](crate::presence)).
    ///
    /// ```
    /// use rohrpost::presence::Presence;
    /// use rohrpost::prelude::*;
    /// use rohrpost::subscribe::Subscriptions;
    ///
    /// # async fn start() -> Result<(), rohrpost::server::ServerError> {
    /// let server = Server::builder()
    ///     .handlers(Subscriptions::token("hunter2").with_presence().handlers())
    ///     .presence(Presence::groups(["todo-*"]))
    ///     .bind("127.0.0.1:0")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_presence(mut self) -> Self {
        self.presence = true;
        self
    }

    /// Subscriptions allowed for requests whose `auth_jwt` is exactly `token`, compared in
    /// constant time (the time a comparison takes tells nothing of how much of a guess was
    /// right).
    pub fn token(token: impl Into<String>) -> Self {
        let token: Arc<str> = Arc::from(token.into());
        Self::new(move |attempt| {
            let allowed = attempt
                .token
                .as_deref()
                .is_some_and(|given| secrets_equal(given, &token));
            async move { allowed }
        })
    }

    /// Every subscription allowed (for demos and trusted networks only).
    pub fn allow_all() -> Self {
        Self::new(|_| async { true })
    }

    /// The `subscribe` and `unsubscribe` handlers, to merge into the server's set.
    pub fn handlers(&self) -> Handlers {
        let on_subscribe = self.clone();
        let on_unsubscribe = self.clone();
        let on_presence = self.clone();
        let handlers = Handlers::new()
            .handler(
                "subscribe",
                move |conn: Connection, request: Request, Data(data): Data<SubscribeData>| {
                    let this = on_subscribe.clone();
                    async move {
                        this.subscribe_with(conn, request, data.object, data.since, data.presence)
                            .await
                    }
                },
            )
            .handler(
                "unsubscribe",
                move |conn: Connection, request: Request, Data(object): Data<GroupObject>| {
                    let this = on_unsubscribe.clone();
                    async move { this.unsubscribe(conn, request, object).await }
                },
            );
        if !self.presence {
            return handlers;
        }
        handlers.handler(
            "presence",
            move |conn: Connection, request: Request, Data(data): Data<PresenceData>| {
                let this = on_presence.clone();
                async move { this.presence(conn, request, data.object, data.list).await }
            },
        )
    }

    /// Checks the hook, then answers who is in the group (the list only with `list`);
    /// `PRESENCE_DISABLED` for a group without presence.
    pub async fn presence(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
        list: bool,
    ) -> Result<Json<PresenceSnapshot>, Error> {
        let group = self
            .authorized(connection.clone(), &request, object, Action::Presence)
            .await?;
        match connection.server_groups().presence_of(&group, list).await {
            Ok(snapshot) => Ok(Json(snapshot)),
            Err(GroupError::NoPresence(_)) => Err(Error::new(crate::protocol::PRESENCE_DISABLED)),
            Err(error) => Err(Error::internal(error)),
        }
    }

    /// Checks the hook, then joins: `{"group": "todo-1"}` or `ACCESS_DENIED`. A subscriber
    /// that sent `since` gets no replay and no position this way: see
    /// [`subscribe_since`](Self::subscribe_since).
    pub async fn subscribe(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
    ) -> Result<Json<Subscribed>, Error> {
        self.subscribe_since(connection, request, object, Since::Absent)
            .await
    }

    /// Checks the hook, then joins as a subscriber that asked for positions: what it missed
    /// is queued before the reply, which carries the position (and, after a position,
    /// whether it was recovered).
    ///
    /// A `subscribe` of your own that does more than the stock one, and still resumes (the
    /// group's presence events, `"presence": true`, come only with the stock
    /// [`handlers`](Self::handlers)):
    ///
    /// ```
    /// use rohrpost::groups::Since;
    /// use rohrpost::prelude::*;
    /// use rohrpost::subscribe::{GroupObject, Subscriptions};
    ///
    /// #[derive(Deserialize)]
    /// struct Subscribe {
    ///     #[serde(flatten)]
    ///     object: GroupObject,
    ///     #[serde(default, deserialize_with = "Since::deserialize_present")]
    ///     since: Since,
    /// }
    ///
    /// let subscriptions = Subscriptions::token("hunter2");
    /// let handlers = Handlers::new().handler(
    ///     "subscribe",
    ///     move |conn: Connection, request: Request, Data(data): Data<Subscribe>| {
    ///         let subscriptions = subscriptions.clone();
    ///         async move {
    ///             let joined = subscriptions
    ///                 .subscribe_since(conn.clone(), request, data.object, data.since)
    ///                 .await?;
    ///             tracing::info!(connection = conn.id(), group = %joined.0.group, "subscribed");
    ///             Ok::<_, Error>(joined)
    ///         }
    ///     },
    /// );
    /// # let _ = handlers;
    /// ```
    pub async fn subscribe_since(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
        since: Since,
    ) -> Result<Json<Subscribed>, Error> {
        self.subscribe_with(connection, request, object, since, false)
            .await
    }

    /// Checks the hook, then joins; with `presence`, the connection gets the group's join
    /// and leave events from before its own join.
    async fn subscribe_with(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
        since: Since,
        presence: bool,
    ) -> Result<Json<Subscribed>, Error> {
        let group = self
            .authorized(connection.clone(), &request, object, Action::Subscribe)
            .await?;
        let groups = connection.server_groups();
        let was_member = groups.is_member(&group, &connection);
        let watched = presence.then(|| groups.watch_presence(&group, &connection));
        let joined = groups.join_since(&group, &connection, &since).await;
        let joined = match joined {
            Ok(joined) => joined,
            Err(error) => {
                // A watch an earlier subscribe set up stays.
                if !was_member {
                    groups.unwatch_presence(&group, &connection);
                }
                return Err(Error::internal(error));
            }
        };
        if since == Since::Absent {
            return Ok(Json(Subscribed {
                presence: watched,
                ..Subscribed::to(group)
            }));
        }
        let (offset, epoch) = match joined.position {
            Some(Position { offset, epoch }) => (Some(offset), Some(epoch)),
            None => (None, None),
        };
        Ok(Json(Subscribed {
            group,
            offset,
            epoch,
            recovered: joined.recovered,
            presence: watched,
        }))
    }

    /// Checks the hook, then leaves; replies without data.
    pub async fn unsubscribe(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
    ) -> Result<(), Error> {
        let group = self
            .authorized(connection.clone(), &request, object, Action::Unsubscribe)
            .await?;
        connection.leave(&group);
        Ok(())
    }

    async fn authorized(
        &self,
        connection: Connection,
        request: &Request,
        object: GroupObject,
        action: Action,
    ) -> Result<String, Error> {
        let group = object.group_name();
        let attempt = Attempt {
            connection,
            token: auth_token(request).map(str::to_owned),
            object,
            group: group.clone(),
            subscribing: action != Action::Unsubscribe,
            action,
        };
        if (self.authorize)(attempt).await {
            Ok(group)
        } else {
            Err(Error::new(crate::protocol::ACCESS_DENIED))
        }
    }
}

impl fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriptions").finish_non_exhaustive()
    }
}

/// The `subscribe` reply's data: `{"group": "todo-1"}`, and for a subscriber that sent
/// `since` the group's position and whether what it missed was recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Subscribed {
    /// The group joined.
    pub group: String,
    /// The offset of the group's last push, when it keeps a history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The epoch of the group's stream, when it keeps a history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// Whether what the subscriber missed since its `since` position was replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// For a subscriber that sent `"presence": true`: whether it gets the group's join and
    /// leave events (`false`: the group keeps no presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<bool>,
}

impl Subscribed {
    /// The reply of a subscriber that knows nothing of positions: `{"group": …}`.
    pub fn to(group: String) -> Self {
        Self {
            group,
            offset: None,
            epoch: None,
            recovered: None,
            presence: None,
        }
    }
}

/// Whether two secrets are equal, in time that depends on their lengths only.
pub(crate) fn secrets_equal(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_equal_only_when_every_byte_is() {
        assert!(secrets_equal("hunter2", "hunter2"));
        assert!(!secrets_equal("hunter3", "hunter2"));
        assert!(!secrets_equal("hunter", "hunter2"));
        assert!(!secrets_equal("", "hunter2"));
    }
}
