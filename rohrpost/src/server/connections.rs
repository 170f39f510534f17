//! One lifecycle for the connections of a server and of an axum endpoint: each runs in a
//! task of its own; a shutdown tells every live connection to finish its current message
//! and close with 1001, waits for them, and drops the ones still busy at the shutdown
//! timeout. Waiting is on the tasks themselves (no polling of a counter).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::lock::lock;
use crate::Connection;

#[derive(Debug, Default)]
pub(crate) struct Connections {
    /// Every connection's task, from the accept (or the upgrade) on.
    tasks: Mutex<JoinSet<()>>,
    /// The connections past their handshake, to tell at shutdown.
    live: Mutex<HashMap<u64, Connection>>,
    shutting_down: AtomicBool,
}

impl Connections {
    /// Runs a connection's task; finished tasks are reaped here, so the set holds only
    /// running ones.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Whether a shutdown has begun: handshakes that finish now are refused.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Adds a connection to the live list; one that arrives during shutdown is told at once.
    pub(crate) fn register(&self, connection: &Connection) {
        lock(&self.live).insert(connection.id(), connection.clone());
        if self.shutting_down() {
            connection.begin_shutdown();
        }
    }

    pub(crate) fn unregister(&self, connection: &Connection) {
        lock(&self.live).remove(&connection.id());
    }

    /// Tells every live connection to finish its current message and close with 1001, waits
    /// for every task, and drops those still running after `timeout`.
    pub(crate) async fn shut_down(&self, timeout: Duration) {
        self.shutting_down.store(true, Ordering::Release);
        for connection in lock(&self.live).values() {
            connection.begin_shutdown();
        }
        // Taken out of the lock, to wait without holding it; tasks spawned from now on are
        // refused at their handshake.
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        tracing::info!(connections = tasks.len(), "rohrpost shutting down");
        let drained = tokio::time::timeout(timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "shutdown timeout passed: dropping the connections still busy"
            );
            tasks.shutdown().await;
        }
        // Whatever slipped in while waiting is dropped too.
        let late = std::mem::take(&mut *lock(&self.tasks));
        drop(late);
    }
}
