//! # rohrpost
//!
//! A small, fast framework for JSON-over-WebSocket protocols, wire-compatible with
//! [rohrpost](https://rohrpost.readthedocs.io/) for Django Channels and its browser client
//! rohrpost.js.
//!
//! Every message is one JSON object in a text frame: `{"id": …, "type": "…", "data": …}`.
//! The `type` picks the handler; the handler's return value becomes the reply
//! `{"id": …, "type": …, "data": …}` (or `{"id", "type", "error"}`), with the request's `id`
//! echoed unchanged. A built-in `ping` answers `pong`.
//!
//! Handlers are plain `async fn`s registered with [`#[rohrpost_handler]`](rohrpost_handler):
//! they are collected at link time, so nothing has to be listed by hand. Their arguments are
//! extracted from the request ([`Request`], [`Data<T>`], [`Connection`], [`State<T>`], [`Extension<T>`]) and
//! their return value is turned into the reply ([`IntoReply`](reply::IntoReply)).
//!
//! ```
//! use rohrpost::prelude::*;
//!
//! #[rohrpost_handler("echo")]
//! async fn echo(req: Request) -> Option<Value> {
//!     req.data
//! }
//!
//! #[derive(Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! #[rohrpost_handler("add", "sum")]
//! async fn add(Data(add): Data<Add>) -> Result<i64, Error> {
//!     add.a.checked_add(add.b).ok_or_else(|| Error::new("Overflow."))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind("127.0.0.1:0").await?;
//! println!("listening on {}", server.url()); // ws://127.0.0.1:…/rohrpost/
//! # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! # drop(stop);
//! server.serve_until(async { let _ = stopped.await; }).await;
//! # Ok(()) }
//! ```
//!
//! A handler's panic becomes the error reply `"Internal server error."`; the connection
//! stays open. Errors converted with `?` are logged (with [`tracing`](https://docs.rs/tracing))
//! and hidden from the client in the same way; [`Error::new`] sends its message.
//!
//! ## Cargo features
//! None is on by default.
//! - `sqlx`: `notify::Transaction`, notifications sent when an sqlx transaction commits.
//! - `redis`: `RedisGroups`, groups across several servers through Redis pub/sub.
//! - `axum`: `Endpoint`, rohrpost mounted at a route of an axum app.
//! - `client`: `client::Client`, the Rust counterpart of rohrpost.js.
//! - `client-tls`: `wss://` for the client (rustls with the ring provider).
//!
//! ## Linking
//! Registration uses [`inventory`](https://docs.rs/inventory): a handler defined in a
//! library crate that the program never references may not be linked in, and is then
//! missing. Reference something of that crate from the program, or build the set by hand
//! with [`Handlers`].
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "client", feature = "redis"))]
mod backoff;
#[cfg(feature = "client")]
pub mod client;
mod connection;
mod dispatch;
mod error;
pub mod extract;
pub mod groups;
pub mod handler;
pub mod handshake;
mod incoming;
mod lock;
mod message;
mod metrics;
pub mod notify;
mod outbound;
pub mod presence;
pub mod protocol;
mod registry;
pub mod reply;
#[cfg(feature = "schema")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema")))]
pub mod schema;
pub mod server;
pub mod subscribe;
mod type_map;

pub use connection::{Connection, SendError};
pub use error::Error;
pub use extract::{Data, Extension, RequestId, State};
pub use groups::Groups;
pub use message::{EmptyMessage, Message, Request};
pub use registry::{DuplicateHandler, Handlers};
pub use reply::{Json, NoReply};
pub use server::Server;
/// Text frame contents, cheap to clone: serialize a message once and send the same bytes to
/// many connections with [`Connection::try_send_text`].
pub use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Registers an `async fn` as the handler of one or more message types.
///
/// `#[rohrpost_handler("ping", "echo")]` registers the function under each name given;
/// `#[rohrpost_handler]` registers it under its own name. The function itself is left
/// unchanged, so it can be called (and tested) directly.
///
/// Every argument must implement [`FromRequest`](extract::FromRequest) and the return type [`IntoReply`](reply::IntoReply); the
/// macro points at the offending token otherwise. Handlers must be free `async fn`s without
/// `self` or generics.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[rohrpost_handler]
/// async fn hello() -> &'static str {
///     "hello"
/// }
/// ```
///
/// The generated code names the crate `::rohrpost`. When it is renamed in `Cargo.toml`, or
/// reached through another crate's re-export, say where it is with `crate = "path"` (as
/// serde's `#[serde(crate = "...")]`; `#[derive(Notify)]` takes `#[rohrpost(crate = "...")]`):
///
/// ```
/// mod web {
///     pub use ::rohrpost::*; // stands in for `pub use rohrpost;` in a framework crate
/// }
///
/// #[web::rohrpost_handler("echo", crate = "crate::web")]
/// async fn echo(web::Data(text): web::Data<String>) -> String {
///     text
/// }
/// # fn main() {}
/// ```
pub use rohrpost_macros::rohrpost_handler;

/// The names most handlers need: `use rohrpost::prelude::*;`.
///
/// Deriving `Serialize`/`Deserialize` needs `serde` (with its `derive` feature) among your
/// own dependencies, as for every serde-based crate.
pub mod prelude {
    pub use crate::{
        rohrpost_handler, Connection, Data, Error, Extension, Groups, Handlers, Json, Message,
        NoReply, Request, RequestId, Server, State,
    };
    pub use serde::{Deserialize, Serialize};
    pub use serde_json::{json, Value};
}

/// What the macros' output names; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::dispatch_detached;
    pub use crate::extract::RequestContext;
    pub use crate::handler::{extract, extract_last, into_reply};
    pub use crate::registry::HandlerEntry;
    pub use crate::reply::Reply;
    pub use futures_util::future::BoxFuture;
    pub use inventory;
    pub use serde_json;

    /// What `#[rohrpost_handler]` and `#[derive(Notify)]` record of their types, with the
    /// `schema` feature.
    #[cfg(feature = "schema")]
    pub mod schema {
        pub use crate::schema::{
            DescribeAny, DescribeTyped, Described, HandlerDescription, HandlerSchema, Probe,
            PushSchema, ReplyDescription,
        };
        pub use schemars::SchemaGenerator;
    }

    /// A primary key as JSON (`null` if it does not serialize).
    pub fn to_pk<T: serde::Serialize + ?Sized>(pk: &T) -> serde_json::Value {
        serde_json::to_value(pk).unwrap_or(serde_json::Value::Null)
    }

    /// The object's `Serialize` form, or `{"id": pk}` (logged) if it does not serialize.
    pub fn serialized_or_pk<T>(object: &T) -> serde_json::Value
    where
        T: serde::Serialize + crate::notify::Notify + ?Sized,
    {
        serde_json::to_value(object).unwrap_or_else(|error| {
            tracing::error!(%error, "a notification's object does not serialize; sending its id only");
            serde_json::json!({ "id": object.pk() })
        })
    }
}

/// What the macros write for the `schema` feature: kept with it, dropped without it (a
/// `#[cfg(feature)]` in their output would test the user's crate's features, not ours).
#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($($tokens:tt)*) => { $($tokens)* };
}

/// What the macros write for the `schema` feature: dropped without it.
#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __schema {
    ($($tokens:tt)*) => {};
}

/// The README's Rust snippets, compiled as doc tests (they use the optional features).
#[cfg(all(
    doctest,
    feature = "axum",
    feature = "sqlx",
    feature = "client",
    feature = "schema"
))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeSnippets;
