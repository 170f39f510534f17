//! Typed state: the application's (given to the server at start) and each connection's.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::handler::{FromRequest, RequestContext};
use crate::Error;

/// A map from a type to one value of that type.
#[derive(Default, Clone)]
pub(crate) struct TypeMap {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl TypeMap {
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let value = self.values.get(&TypeId::of::<T>())?.clone();
        value.downcast::<T>().ok()
    }

    pub(crate) fn remove<T: Send + Sync + 'static>(&mut self) -> Option<Arc<T>> {
        let value = self.values.remove(&TypeId::of::<T>())?;
        value.downcast::<T>().ok()
    }
}

impl fmt::Debug for TypeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeMap")
            .field("len", &self.values.len())
            .finish()
    }
}

/// Application state given to the server with
/// [`ServerBuilder::state`](crate::ServerBuilder::state): a database pool, a config.
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
/// # async fn start() -> Result<(), rohrpost::ServerError> {
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
