//! Handler entries collected at link time, and the name → handler map built from them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use thiserror::Error;

use crate::extract::RequestContext;
use crate::handler::{ErasedHandler, Handler};
use crate::reply::Reply;

/// One `#[rohrpost_handler]`, as the macro registers it with `inventory`.
#[doc(hidden)]
#[derive(Debug)]
pub struct HandlerEntry {
    names: &'static [&'static str],
    function: &'static str,
    call: fn(RequestContext) -> BoxFuture<'static, Reply>,
}

impl HandlerEntry {
    #[doc(hidden)]
    pub const fn new(
        names: &'static [&'static str],
        function: &'static str,
        call: fn(RequestContext) -> BoxFuture<'static, Reply>,
    ) -> Self {
        Self {
            names,
            function,
            call,
        }
    }
}

inventory::collect!(HandlerEntry);

/// A handler name was defined twice.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("Handler for \"{name}\" is already defined: by `{first}` and by `{second}`")]
pub struct DuplicateHandler {
    /// The message type defined twice.
    pub name: String,
    /// The function that defined it first.
    pub first: String,
    /// The function that defined it again.
    pub second: String,
}

#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) function: Arc<str>,
    pub(crate) call: ErasedHandler,
}

/// A set of handlers by message type: the global one that `#[rohrpost_handler]` fills
/// ([`Handlers::collect`], the server's default), or one built by hand ([`Handlers::new`] and
/// [`Handlers::handler`]) for tests or for two servers in one process.
///
/// A name defined twice is an error when the server starts, naming both functions:
/// `Handler for "ping" is already defined: by `app::ping` and by `app::other``.
///
/// The built-in `ping` answers `ping` unless the set defines its own.
///
/// ```
/// use rohrpost::prelude::*;
///
/// async fn echo(req: Request) -> Option<Value> {
///     req.data
/// }
///
/// # async fn start() -> Result<(), rohrpost::server::ServerError> {
/// let handlers = Handlers::new().handler("echo", echo);
/// let server = Server::builder().handlers(handlers).bind("127.0.0.1:0").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    map: HashMap<Box<str>, Registered>,
    duplicates: Vec<DuplicateHandler>,
}

impl Handlers {
    /// An empty set (the built-in `ping` still answers).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every handler registered with `#[rohrpost_handler]` in the program.
    ///
    /// As with every `inventory`-based registry, a handler in a library crate that the
    /// program never references may not be linked in, and then it is missing here: refer to
    /// something in that crate (a `pub fn register() {}` called from `main` suffices).
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// #[rohrpost_handler("echo")]
    /// async fn echo(req: Request) -> Option<Value> {
    ///     req.data
    /// }
    ///
    /// let handlers = Handlers::collect();
    /// assert!(handlers.names().any(|name| name == "echo"));
    /// ```
    pub fn collect() -> Self {
        let mut handlers = Self::new();
        for entry in inventory::iter::<HandlerEntry> {
            let call: ErasedHandler = Arc::new(entry.call);
            let function: Arc<str> = Arc::from(entry.function);
            for name in entry.names {
                handlers.insert(
                    name,
                    Registered {
                        function: function.clone(),
                        call: call.clone(),
                    },
                );
            }
        }
        handlers
    }

    /// Adds `handler` under `name`: any `async fn` whose arguments implement
    /// [`FromRequest`](crate::extract::FromRequest) and whose output implements
    /// [`IntoReply`](crate::reply::IntoReply).
    pub fn handler<H, Args>(mut self, name: impl Into<String>, handler: H) -> Self
    where
        H: Handler<Args>,
        Args: 'static,
    {
        let name = name.into();
        let call: ErasedHandler = Arc::new(move |cx| handler.call(cx));
        let function = Arc::from(std::any::type_name::<H>());
        self.insert(&name, Registered { function, call });
        self
    }

    /// Adds every handler of `other`. A name both define counts as defined twice:
    /// [`check`](Self::check) (and binding a server) then fails.
    ///
    /// ```
    /// use rohrpost::prelude::*;
    ///
    /// async fn add(Data((a, b)): Data<(i64, i64)>) -> i64 { a + b }
    /// async fn sub(Data((a, b)): Data<(i64, i64)>) -> i64 { a - b }
    ///
    /// let math = Handlers::new().handler("add", add).handler("sub", sub);
    /// let handlers = Handlers::new().handler("echo", |req: Request| async move { req.data }).merge(math);
    /// assert_eq!(handlers.names().count(), 3);
    /// assert!(handlers.check().is_ok());
    ///
    /// let twice = Handlers::new().handler("add", add).merge(Handlers::new().handler("add", sub));
    /// assert!(twice.check().is_err());
    /// ```
    pub fn merge(mut self, other: Handlers) -> Self {
        self.duplicates.extend(other.duplicates);
        for (name, registered) in other.map {
            self.insert(&name, registered);
        }
        self
    }

    /// The message types with a handler, in no particular order (the built-in `ping` is
    /// listed only when the set overrides it).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|name| &**name)
    }

    /// The first name defined twice, if any.
    pub fn check(&self) -> Result<(), DuplicateHandler> {
        match self.duplicates.first() {
            Some(duplicate) => Err(duplicate.clone()),
            None => Ok(()),
        }
    }

    /// The handler of `name`, with the name as the set stores it (which outlives the
    /// request, so the dispatcher need not copy the request's).
    /// Forgets the handler of `name`.
    #[cfg(feature = "schema")]
    pub(crate) fn remove(&mut self, name: &str) {
        self.map.remove(name);
    }

    pub(crate) fn get(&self, name: &str) -> Option<(&str, &Registered)> {
        self.map
            .get_key_value(name)
            .map(|(name, registered)| (&**name, registered))
    }

    fn insert(&mut self, name: &str, registered: Registered) {
        if let Some(existing) = self.map.get(name) {
            self.duplicates.push(DuplicateHandler {
                name: name.to_owned(),
                first: existing.function.to_string(),
                second: registered.function.to_string(),
            });
            return;
        }
        self.map.insert(name.into(), registered);
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("Handlers")
            .field("names", &names)
            .field("duplicates", &self.duplicates)
            .finish()
    }
}
