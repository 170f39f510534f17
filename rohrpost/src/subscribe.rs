//! Subscriptions as rohrpost.js makes them: `subscribe`/`unsubscribe` to a group object.
//!
//! rohrpost.js sends `{"id": 3, "type": "subscribe", "auth_jwt": "<token>", "data": {"type":
//! "todo", "id": 1}}`; the group object `{type, id}` names the group `"todo-1"`. The reply is
//! `{"id": 3, "type": "subscribe", "data": {"group": "todo-1"}}`, or
//! `{"id": 3, "type": "subscribe", "error": "ACCESS_DENIED"}` when the authorization hook
//! refuses. `unsubscribe` likewise, replying `{"id": 4, "type": "unsubscribe"}`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Connection, Data, Error, Handlers, Json, Request};

/// What rohrpost.js subscribes to: `{"type": "todo", "id": 1}`, the group `"todo-1"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// `true` for `subscribe`, `false` for `unsubscribe`.
    pub subscribing: bool,
}

type Authorize = Arc<dyn Fn(Attempt) -> BoxFuture<'static, bool> + Send + Sync>;

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
        }
    }

    /// Subscriptions allowed for requests whose `auth_jwt` is exactly `token`.
    pub fn token(token: impl Into<String>) -> Self {
        let token: Arc<str> = Arc::from(token.into());
        Self::new(move |attempt| {
            let allowed = attempt.token.as_deref() == Some(&*token);
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
        Handlers::new()
            .handler(
                "subscribe",
                move |conn: Connection, request: Request, Data(object): Data<GroupObject>| {
                    let this = on_subscribe.clone();
                    async move { this.subscribe(conn, request, object).await }
                },
            )
            .handler(
                "unsubscribe",
                move |conn: Connection, request: Request, Data(object): Data<GroupObject>| {
                    let this = on_unsubscribe.clone();
                    async move { this.unsubscribe(conn, request, object).await }
                },
            )
    }

    /// Checks the hook, then joins: `{"group": "todo-1"}` or `ACCESS_DENIED`.
    pub async fn subscribe(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
    ) -> Result<Json<Subscribed>, Error> {
        let group = self
            .authorized(connection.clone(), &request, object, true)
            .await?;
        connection.join(&group).await.map_err(Error::internal)?;
        Ok(Json(Subscribed { group }))
    }

    /// Checks the hook, then leaves; replies without data.
    pub async fn unsubscribe(
        &self,
        connection: Connection,
        request: Request,
        object: GroupObject,
    ) -> Result<(), Error> {
        let group = self
            .authorized(connection.clone(), &request, object, false)
            .await?;
        connection.leave(&group);
        Ok(())
    }

    async fn authorized(
        &self,
        connection: Connection,
        request: &Request,
        object: GroupObject,
        subscribing: bool,
    ) -> Result<String, Error> {
        let group = object.group_name();
        let attempt = Attempt {
            connection,
            token: auth_token(request).map(str::to_owned),
            object,
            group: group.clone(),
            subscribing,
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

/// The `subscribe` reply's data: `{"group": "todo-1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The group joined.
    pub group: String,
}
