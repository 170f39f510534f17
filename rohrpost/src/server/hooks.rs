//! The connection hooks: `on_connect` runs before a connection's first message is read,
//! `on_disconnect` after its last, while it is still a member of its groups. Each is
//! bounded by the handler timeout; a hook that fails, panics or runs over is logged and the
//! connection goes on (or ends) as it would have.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::Connection;

/// An async hook that gets a connection.
#[derive(Clone)]
pub(crate) struct ConnectionHook {
    name: &'static str,
    hook: Arc<dyn Fn(Connection) -> BoxFuture<'static, ()> + Send + Sync>,
}

impl ConnectionHook {
    pub(crate) fn new<F, Fut>(name: &'static str, hook: F) -> Self
    where
        F: Fn(Connection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            name,
            hook: Arc::new(move |connection| Box::pin(hook(connection))),
        }
    }

    /// Runs the hook for `connection`, at most `timeout`.
    pub(crate) async fn run(&self, connection: &Connection, timeout: Duration) {
        let call = AssertUnwindSafe((self.hook)(connection.clone())).catch_unwind();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                tracing::error!(
                    hook = self.name,
                    connection = connection.id(),
                    "the connection hook panicked"
                )
            }
            Err(_) => tracing::error!(
                hook = self.name,
                connection = connection.id(),
                ?timeout,
                "the connection hook ran over the handler timeout and was dropped"
            ),
        }
    }
}

impl fmt::Debug for ConnectionHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionHook")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}
