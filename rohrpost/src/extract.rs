//! What a handler may take: the [`FromRequest`] trait and every argument type it has.
//!
//! [`Request`] (the whole message), [`Data<T>`] (its `data` decoded), [`Connection`],
//! [`Groups`], [`State<T>`] (application state) and [`RequestId`]; implement
//! [`FromRequest`] for your own.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::incoming::Incoming;
use crate::type_map::TypeMap;
use crate::{Connection, Error, Groups, Request};

/// Everything a handler can draw its arguments from: the request, its connection and the
/// application state. Implement [`FromRequest`] on your own types to extract from it.
///
/// The request's `data` is kept as the raw JSON text the client sent until an extractor
/// decodes it: [`Data<T>`] straight into `T`, [`Request`] into a `Value`.
#[derive(Debug)]
pub struct RequestContext {
    pub(crate) request: Incoming,
    pub(crate) connection: Connection,
    pub(crate) state: Arc<TypeMap>,
}

impl RequestContext {
    /// The request's `id`.
    pub fn id(&self) -> &Value {
        &self.request.id
    }

    /// The request's `type`: the name its handler was registered under.
    pub fn message_type(&self) -> &str {
        &self.request.message_type
    }

    /// The request's `data`, as the raw JSON text the client sent; `None` when it had none.
    pub fn data(&self) -> Option<&RawValue> {
        self.request.data.as_deref()
    }

    /// A top-level field other than `id`, `type` and `data`, such as the `auth_jwt` that
    /// rohrpost.js sends.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.request.fields.get(name)
    }

    /// Every top-level field other than `id`, `type` and `data`.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.request.fields
    }

    /// The connection the request came on.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The application state of type `T`, if the server was given one.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.state.get::<T>()
    }
}

/// A type a handler can take as an argument.
///
/// Provided: [`Request`] (the whole message), [`Data<T>`] (its `data` decoded),
/// [`Connection`], [`Groups`], [`State<T>`] and [`RequestId`]. An `Err` is sent back as the
/// error reply and the handler is not called.
///
/// ```
/// use rohrpost::prelude::*;
/// use rohrpost::extract::{FromRequest, RequestContext};
///
/// /// The caller's token, from the top-level `auth_jwt` field rohrpost.js sends.
/// struct Token(String);
///
/// impl FromRequest for Token {
///     fn from_request(cx: &RequestContext) -> Result<Self, Error> {
///         match cx.field("auth_jwt") {
///             Some(Value::String(token)) => Ok(Token(token.clone())),
///             _ => Err(Error::new("ACCESS_DENIED")),
///         }
///     }
/// }
///
/// #[rohrpost_handler("secret")]
/// async fn secret(Token(token): Token) -> String {
///     format!("{} characters of token", token.len())
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a rohrpost handler argument",
    label = "not extractable from a request",
    note = "handler arguments are `Request`, `Data<T>`, `Connection`, `Groups`, `State<T>`, `Extension<T>`, `RequestId`, or your own type implementing `rohrpost::extract::FromRequest`"
)]
pub trait FromRequest: Sized {
    /// Extracts `Self` from the request, or fails with the error reply to send.
    fn from_request(cx: &RequestContext) -> Result<Self, Error>;

    /// Extracts the handler's last argument, which may take parts of the request by value
    /// instead of copying them (the reply still has the request's id and type). By default,
    /// [`from_request`](Self::from_request).
    fn from_request_last(cx: &mut RequestContext) -> Result<Self, Error> {
        Self::from_request(cx)
    }
}

impl FromRequest for Request {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        Ok(Request {
            id: cx.request.id.clone(),
            message_type: cx.request.message_type.clone(),
            data: data_value(&cx.request)?,
            fields: cx.request.fields.clone(),
        })
    }

    fn from_request_last(cx: &mut RequestContext) -> Result<Self, Error> {
        Ok(Request {
            id: cx.request.id.clone(),
            message_type: cx.request.message_type.clone(),
            data: data_value(&cx.request)?,
            fields: std::mem::take(&mut cx.request.fields),
        })
    }
}

/// `data` as a `Value`, or the `Invalid data` error for data a `Value` cannot hold.
fn data_value(request: &Incoming) -> Result<Option<Value>, Error> {
    request.data_value().map_err(invalid_data)
}

/// The `Invalid data` error reply, with serde_json's reason. The position serde_json adds is
/// left out: it counts within `data`, not within the message the client sent.
fn invalid_data(error: serde_json::Error) -> Error {
    let reason = error.to_string();
    // serde_json adds exactly this suffix when it knows a position (line 1 or later).
    let position = format!(" at line {} column {}", error.line(), error.column());
    let reason = match error.line() {
        0 => &reason,
        _ => reason.strip_suffix(&position).unwrap_or(&reason),
    };
    Error::new(crate::protocol::invalid_data(reason))
}

/// The request's `id`, as a handler argument.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestId(pub Value);

impl FromRequest for RequestId {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        Ok(RequestId(cx.request.id.clone()))
    }
}

/// The request's `data`, decoded into `T`.
///
/// Data that does not decode gets the error reply `"Invalid data: <serde's reason>"`, and a
/// missing `data` field `"Missing required field 'data'."` (unless `T` accepts `null`, like
/// `Option<_>`); the handler is not called.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[derive(Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// #[rohrpost_handler("add", "sum")]
/// async fn add(Data(add): Data<Add>) -> i64 {
///     add.a + add.b
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Data<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Data<T> {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        // Decoded straight from the text the client sent: no `Value` on the way.
        match cx.data() {
            Some(data) => match serde_json::from_str(data.get()) {
                Ok(data) => Ok(Data(data)),
                // Through a `Value` after all: it accepts what a `Value` does (the last of
                // duplicate keys) and words its reasons as before (keys in sorted order).
                Err(_) => serde_json::from_str::<Value>(data.get())
                    .and_then(T::deserialize)
                    .map(Data)
                    .map_err(invalid_data),
            },
            None => T::deserialize(&Value::Null)
                .map(Data)
                .map_err(|_| Error::new(crate::protocol::MISSING_DATA)),
        }
    }
}

/// Application state given to the server with
/// [`ServerBuilder::state`](crate::server::ServerBuilder::state): a database pool, a config.
///
/// Any number of states of distinct types may be given; a handler names the one it wants by
/// its type. The value is shared (behind an `Arc`), so it is cheap to extract. Asking for a
/// type the server was not given is an internal error: the client sees
/// `"Internal server error."`, and the log names the missing type.
///
/// ```
/// use rohrpost::prelude::*;
///
/// struct Config { greeting: String }
///
/// #[rohrpost_handler("greet")]
/// async fn greet(config: State<Config>) -> String {
///     config.greeting.clone()
/// }
///
/// # async fn start() -> Result<(), rohrpost::server::ServerError> {
/// let server = Server::builder()
///     .state(Config { greeting: "moin".into() })
///     .bind("127.0.0.1:0")
///     .await?;
/// # Ok(()) }
/// ```
pub struct State<T>(pub Arc<T>);

impl<T> Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for State<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("State").field(&self.0).finish()
    }
}

/// No state of the requested type was given to the server.
#[derive(Debug, thiserror::Error)]
#[error(
    "no application state of type `{0}` was given to the server: add it with ServerBuilder::state"
)]
pub struct MissingState(pub &'static str);

impl<T: Send + Sync + 'static> FromRequest for State<T> {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        cx.state::<T>()
            .map(State)
            .ok_or_else(|| Error::internal(MissingState(std::any::type_name::<T>())))
    }
}

/// A per-connection value, as a handler argument: what the authentication hook accepted
/// the connection with ([`Accept::with`](crate::handshake::Accept::with)) or what a handler
/// or hook stored ([`Connection::insert`]). A missing value fails the request with
/// "Internal server error." and logs [`MissingExtension`], which names the type.
///
/// ```
/// use rohrpost::prelude::*;
/// use rohrpost::Extension;
///
/// struct User(String);
///
/// #[rohrpost_handler("whoami")]
/// async fn whoami(Extension(user): Extension<User>) -> String {
///     user.0.clone()
/// }
/// ```
pub struct Extension<T>(pub Arc<T>);

impl<T> Deref for Extension<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Clone for Extension<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Extension<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Extension").field(&self.0).finish()
    }
}

/// No per-connection value of the requested type was stored.
#[derive(Debug, thiserror::Error)]
#[error("no per-connection value of type `{0}`: give it with Accept::with in the authentication hook, or Connection::insert")]
pub struct MissingExtension(pub &'static str);

impl<T: Send + Sync + 'static> FromRequest for Extension<T> {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        cx.connection
            .get::<T>()
            .map(Extension)
            .ok_or_else(|| Error::internal(MissingExtension(std::any::type_name::<T>())))
    }
}

impl FromRequest for Connection {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        Ok(cx.connection.clone())
    }
}

impl FromRequest for Groups {
    fn from_request(cx: &RequestContext) -> Result<Self, Error> {
        Ok(cx.connection.server_groups().clone())
    }
}
