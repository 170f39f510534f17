//! The handler traits: what a handler may take ([`FromRequest`]) and return ([`IntoReply`]).

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::message::{reply_json, Message};
use crate::state::TypeMap;
use crate::{Connection, Error, Request};

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
/// [`Connection`], [`Groups`](crate::Groups), [`State<T>`](crate::State) and [`RequestId`]. An `Err` is sent back as the
/// error reply and the handler is not called.
///
/// ```
/// use rohrpost::prelude::*;
/// use rohrpost::{FromRequest, RequestContext};
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
    note = "handler arguments are `Request`, `Data<T>`, `Connection`, `Groups`, `State<T>`, `RequestId`, or your own type implementing `rohrpost::FromRequest`"
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
                .map_err(|e| Error::new(format!("Invalid data: {e}"))),
            None => missing_data(),
        }
    }

    fn from_request_last(cx: &mut RequestContext) -> Result<Self, Error> {
        // By value: strings and nested values move into `T` instead of being copied.
        match cx.request.data.take() {
            Some(data) => T::deserialize(data)
                .map(Data)
                .map_err(|e| Error::new(format!("Invalid data: {e}"))),
            None => missing_data(),
        }
    }
}

fn missing_data<T: DeserializeOwned>() -> Result<Data<T>, Error> {
    T::deserialize(&Value::Null)
        .map(Data)
        .map_err(|_| Error::new("Missing required field 'data'."))
}

/// What a handler returns, turned into the reply.
///
/// - a number, `bool`, `String`, `&'static str`, [`Value`], `Option`, `Vec`, a map or a set
///   of serializable values, or any `T: Serialize` wrapped in [`Json<T>`]: the reply
///   `{"id", "type", "data": …}`; a value that serializes to `null` (`()`, `None`) leaves out
///   `data`, so `()` is a bare acknowledgement `{"id", "type"}`;
/// - [`NoReply`]: nothing (the handler sent what it wanted itself);
/// - [`Message`]: exactly that message;
/// - [`Error`], or `Result<T, Error>` with `T` any of these: the error reply
///   `{"id", "type", "error"}` on `Err`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a rohrpost handler",
    label = "not a reply",
    note = "return `Json<T>` for any `T: Serialize` (it becomes `data`), a number, string, `Value`, `Option`, `Vec`, `()`, `NoReply`, `Message`, `Error`, or `Result<_, rohrpost::Error>` of these"
)]
pub trait IntoReply {
    /// Builds the reply to `request`.
    fn into_reply(self, request: &Request) -> Reply;
}

/// A handler's reply, ready to send: produced by [`IntoReply`].
#[derive(Debug)]
pub struct Reply(pub(crate) ReplyKind);

#[derive(Debug)]
pub(crate) enum ReplyKind {
    Nothing,
    Text(String),
    Error(Error),
}

impl Reply {
    /// No reply at all.
    pub fn nothing() -> Self {
        Reply(ReplyKind::Nothing)
    }

    /// The error reply for `error`.
    pub fn error(error: Error) -> Self {
        Reply(ReplyKind::Error(error))
    }
}

/// Returned by a handler that sends no reply (it sent its messages itself, or the request
/// needs no answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoReply;

impl IntoReply for NoReply {
    fn into_reply(self, _: &Request) -> Reply {
        Reply::nothing()
    }
}

/// Any serializable value as the reply's `data`: wrap your own `Serialize` types in it.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[derive(Serialize)]
/// struct Todo { id: i64, title: String }
///
/// #[rohrpost_handler("todo.get")]
/// async fn get(Data(id): Data<i64>) -> Result<Json<Todo>, Error> {
///     Ok(Json(Todo { id, title: "milk".into() }))
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self, request: &Request) -> Reply {
        data_reply(request, &self.0)
    }
}

fn data_reply<T: Serialize + ?Sized>(request: &Request, data: &T) -> Reply {
    match reply_json(&request.id, &request.message_type, data) {
        Ok(text) => Reply(ReplyKind::Text(text)),
        Err(e) => Reply::error(Error::internal(e)),
    }
}

/// Replies whose `data` is the value itself.
macro_rules! data_replies {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {
        $(
            impl<$($generics)*> IntoReply for $ty {
                fn into_reply(self, request: &Request) -> Reply {
                    data_reply(request, &self)
                }
            }
        )*
    };
}

data_replies!(
    [] (), [] bool, [] char,
    [] i8, [] i16, [] i32, [] i64, [] i128, [] isize,
    [] u8, [] u16, [] u32, [] u64, [] u128, [] usize,
    [] f32, [] f64,
    [] String, [] &'static str, [] std::borrow::Cow<'static, str>,
    [] Value, [] serde_json::Map<String, Value>,
    [T: Serialize] Option<T>,
    [T: Serialize] Vec<T>,
    [T: Serialize] std::collections::VecDeque<T>,
    [T: Serialize, S] std::collections::HashSet<T, S>,
    [T: Serialize] std::collections::BTreeSet<T>,
    [K: Serialize, V: Serialize, S] std::collections::HashMap<K, V, S>,
    [K: Serialize, V: Serialize] std::collections::BTreeMap<K, V>,
);

impl IntoReply for Message {
    fn into_reply(self, _: &Request) -> Reply {
        match self.to_json() {
            Ok(text) => Reply(ReplyKind::Text(text)),
            Err(e) => Reply::error(Error::internal(e)),
        }
    }
}

impl IntoReply for Error {
    fn into_reply(self, _: &Request) -> Reply {
        Reply::error(self)
    }
}

impl<T: IntoReply> IntoReply for Result<T, Error> {
    fn into_reply(self, request: &Request) -> Reply {
        match self {
            Ok(value) => value.into_reply(request),
            Err(error) => Reply::error(error),
        }
    }
}

/// A handler with its arguments erased, as the registry stores it.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(RequestContext) -> BoxFuture<'static, Reply> + Send + Sync>;

/// An `async fn` usable as a handler: every argument implements [`FromRequest`] and the
/// output implements [`IntoReply`]. Implemented for functions of up to 12 arguments.
///
/// `#[rohrpost_handler]` needs none of this; it is for building a
/// [`Handlers`](crate::Handlers) set by hand.
pub trait Handler<Args>: Clone + Send + Sync + 'static {
    /// Extracts the arguments, runs the handler and builds its reply.
    fn call(&self, cx: RequestContext) -> BoxFuture<'static, Reply>;
}

/// Extracts one argument; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn extract<T: FromRequest>(cx: &RequestContext) -> Result<T, Error> {
    T::from_request(cx)
}

/// Extracts the last argument; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn extract_last<T: FromRequest>(cx: &mut RequestContext) -> Result<T, Error> {
    T::from_request_last(cx)
}

/// Turns a handler's output into its reply; used by the generated code and by [`Handler`].
#[doc(hidden)]
pub fn into_reply<T: IntoReply>(output: T, cx: &RequestContext) -> Reply {
    output.into_reply(&cx.request)
}

macro_rules! impl_handler {
    ($($arg:ident),* ; $last:ident) => {
        impl<F, Fut, Out, $($arg,)* $last> Handler<($($arg,)* $last,)> for F
        where
            F: Fn($($arg,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Out> + Send + 'static,
            Out: IntoReply,
            $($arg: FromRequest + Send + 'static,)*
            $last: FromRequest + Send + 'static,
        {
            #[allow(non_snake_case)]
            fn call(&self, mut cx: RequestContext) -> BoxFuture<'static, Reply> {
                let handler = self.clone();
                Box::pin(async move {
                    $(
                        let $arg = match extract::<$arg>(&cx) {
                            Ok(value) => value,
                            Err(error) => return Reply::error(error),
                        };
                    )*
                    let $last = match extract_last::<$last>(&mut cx) {
                        Ok(value) => value,
                        Err(error) => return Reply::error(error),
                    };
                    into_reply(handler($($arg,)* $last).await, &cx)
                })
            }
        }
    };
}

impl<F, Fut, Out> Handler<()> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Out> + Send + 'static,
    Out: IntoReply,
{
    fn call(&self, cx: RequestContext) -> BoxFuture<'static, Reply> {
        let handler = self.clone();
        Box::pin(async move { into_reply(handler().await, &cx) })
    }
}

impl_handler!(; A1);
impl_handler!(A1; A2);
impl_handler!(A1, A2; A3);
impl_handler!(A1, A2, A3; A4);
impl_handler!(A1, A2, A3, A4; A5);
impl_handler!(A1, A2, A3, A4, A5; A6);
impl_handler!(A1, A2, A3, A4, A5, A6; A7);
impl_handler!(A1, A2, A3, A4, A5, A6, A7; A8);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8; A9);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9; A10);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10; A11);
impl_handler!(A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11; A12);
