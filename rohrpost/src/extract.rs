//! What a handler may take: the [`FromRequest`] trait and every argument type it has.
//!
//! [`Request`] (the whole message), [`Data<T>`] (its `data` decoded), [`Connection`],
//! [`Groups`], [`State<T>`] (application state) and [`RequestId`]; implement
//! [`FromRequest`] for your own.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::type_map::TypeMap;
use crate::{Connection, Error, Groups, Request};

/// Everything a handler can draw its arguments from: the request, its connection and the
/// application state. Implement [`FromRequest`] on your own types to extract from it.
#[derive(Debug)]
pub struct RequestContext {
    pub(crate) request: Request,
    pub(crate) connection: Connection,
    pub(crate) state: Arc<TypeMap>,
}

impl RequestContext {
    /// The request being handled.
    pub fn request(&self) -> &Request {
        &self.request
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
///         match cx.request().fields.get("auth_jwt") {
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
        Ok(cx.request.clone())
    }

    fn from_request_last(cx: &mut RequestContext) -> Result<Self, Error> {
        Ok(Request {
            id: cx.request.id.clone(),
            message_type: cx.request.message_type.clone(),
            data: cx.request.data.take(),
            fields: std::mem::take(&mut cx.request.fields),
        })
    }
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
        match &cx.request.data {
            Some(data) => T::deserialize(data)
                .map(Data)
                .map_err(|e| Error::new(crate::protocol::invalid_data(e))),
            None => missing_data(),
        }
    }

    fn from_request_last(cx: &mut RequestContext) -> Result<Self, Error> {
        // By value: strings and nested values move into `T` instead of being copied.
        match cx.request.data.take() {
            Some(data) => T::deserialize(data)
                .map(Data)
                .map_err(|e| Error::new(crate::protocol::invalid_data(e))),
            None => missing_data(),
        }
    }
}

fn missing_data<T: DeserializeOwned>() -> Result<Data<T>, Error> {
    T::deserialize(&Value::Null)
        .map(Data)
        .map_err(|_| Error::new(crate::protocol::MISSING_DATA))
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
