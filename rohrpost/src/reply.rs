//! What a handler may return: the [`IntoReply`] trait and every reply type it has.

use serde::Serialize;
use serde_json::Value;

use crate::extract::RequestContext;
use crate::message::{reply_json, Message};
use crate::Error;

/// What a handler returns, turned into the reply.
///
/// - a number, `bool`, `String`, `&'static str`, [`Value`], `Option`, `Vec`, a map or a set
///   of serializable values, raw JSON text (`Box<RawValue>`, written as it is), or any
///   `T: Serialize` wrapped in [`Json<T>`]: the reply
///   `{"id", "type", "data": …}`; a value that serializes to `null` (`()`, `None`) leaves out
///   `data`, so `()` is a bare acknowledgement `{"id", "type"}`;
/// - [`NoReply`]: nothing (the handler sent what it wanted itself);
/// - [`Message`]: exactly that message;
/// - [`Error`], or `Result<T, Error>` with `T` any of these: the error reply
///   `{"id", "type", "error"}` on `Err`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a rohrpost handler",
    label = "not a reply",
    note = "return `Json<T>` for any `T: Serialize` (it becomes `data`), a number, string, `Value`, `Box<RawValue>`, `Option`, `Vec`, `()`, `NoReply`, `Message`, `Error`, or `Result<_, rohrpost::Error>` of these"
)]
pub trait IntoReply {
    /// Builds the reply to the request in `cx` (its [`id`](RequestContext::id) and
    /// [`message_type`](RequestContext::message_type)).
    ///
    /// ```
    /// use rohrpost::extract::RequestContext;
    /// use rohrpost::reply::{IntoReply, Json, Reply};
    ///
    /// /// A count, sent as `{"count": n}`.
    /// struct Count(u64);
    ///
    /// impl IntoReply for Count {
    ///     fn into_reply(self, cx: &RequestContext) -> Reply {
    ///         Json(serde_json::json!({ "count": self.0 })).into_reply(cx)
    ///     }
    /// }
    /// ```
    fn into_reply(self, cx: &RequestContext) -> Reply;
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
    fn into_reply(self, _: &RequestContext) -> Reply {
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
    fn into_reply(self, cx: &RequestContext) -> Reply {
        data_reply(cx, &self.0)
    }
}

fn data_reply<T: Serialize + ?Sized>(cx: &RequestContext, data: &T) -> Reply {
    match reply_json(cx.id(), cx.message_type(), data) {
        Ok(text) => Reply(ReplyKind::Text(text)),
        Err(e) => Reply::error(Error::internal(e)),
    }
}

/// Replies whose `data` is the value itself.
macro_rules! data_replies {
    ($([$($generics:tt)*] $ty:ty),* $(,)?) => {
        $(
            impl<$($generics)*> IntoReply for $ty {
                fn into_reply(self, cx: &RequestContext) -> Reply {
                    data_reply(cx, &self)
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
    [] Value, [] serde_json::Map<String, Value>, [] Box<serde_json::value::RawValue>,
    [T: Serialize] Option<T>,
    [T: Serialize] Vec<T>,
    [T: Serialize] std::collections::VecDeque<T>,
    [T: Serialize, S] std::collections::HashSet<T, S>,
    [T: Serialize] std::collections::BTreeSet<T>,
    [K: Serialize, V: Serialize, S] std::collections::HashMap<K, V, S>,
    [K: Serialize, V: Serialize] std::collections::BTreeMap<K, V>,
);

impl IntoReply for Message {
    fn into_reply(self, _: &RequestContext) -> Reply {
        match self.to_json() {
            Ok(text) => Reply(ReplyKind::Text(text)),
            Err(e) => Reply::error(Error::internal(e)),
        }
    }
}

impl IntoReply for Error {
    fn into_reply(self, _: &RequestContext) -> Reply {
        Reply::error(self)
    }
}

impl<T: IntoReply> IntoReply for Result<T, Error> {
    fn into_reply(self, cx: &RequestContext) -> Reply {
        match self {
            Ok(value) => value.into_reply(cx),
            Err(error) => Reply::error(error),
        }
    }
}
