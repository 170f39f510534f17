//! A connection's task as one hand-written future, in three stages: starting (the handshake
//! and the connection's setup, boxed and freed once done), serving (the join of reader and
//! writer, in place), closing (boxed). An `async fn` for the whole would nest the join
//! inside the states of every function on the way (the accept, the setup, the serving), so
//! that a poll of the writer, which every push to an idle connection causes, would read
//! the state of each of them, spread over the task's memory. Here the join sits in the
//! task's first field, its stage, and a poll reads only the stage's tag besides it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;

use super::socket::{LeaveOnDrop, OpenConnection};
use super::Shared;
use crate::Connection;

/// What the starting stage hands over to the serving one: the socket's halves `H`, the
/// connection and the server's state. (With it comes the guard that takes the connection
/// out of its groups, which the task keeps to its end.)
pub(crate) struct Started<H> {
    pub(crate) halves: H,
    pub(crate) connection: Connection,
    pub(crate) shared: Arc<Shared>,
}

/// The starting stage: `None` for a connection refused at its handshake.
pub(crate) type Start<H> = BoxFuture<'static, Option<(Started<H>, LeaveOnDrop)>>;

pin_project! {
    #[project = StageProj]
    enum Stage<H, J> {
        Serving {
            #[pin]
            join: J,
        },
        Starting {
            start: Start<H>,
        },
        Closing {
            closing: BoxFuture<'static, ()>,
        },
        Done,
    }
}

pin_project! {
    /// A connection's task; see the module's documentation. Its fields drop in order:
    /// dropped early (a server shut down past its timeout), it drops the stage first, then
    /// leaves the groups and counts the connection out. Laid out in that order too
    /// (`repr(C)`), the stage first.
    #[repr(C)]
    pub(crate) struct ConnectionTask<H, J: Future> {
        #[pin]
        stage: Stage<H, J>,
        serve: fn(Started<H>) -> J,
        close: fn(J::Output) -> BoxFuture<'static, ()>,
        membership: Option<LeaveOnDrop>,
        _open: OpenConnection,
    }
}

impl<H, J: Future> ConnectionTask<H, J> {
    /// A task that runs `start`, then serves what it started with `serve` (unless it
    /// started nothing: a refused handshake), then runs what `close` makes of the result.
    pub(crate) fn new(
        open: OpenConnection,
        start: Start<H>,
        serve: fn(Started<H>) -> J,
        close: fn(J::Output) -> BoxFuture<'static, ()>,
    ) -> Self {
        Self {
            stage: Stage::Starting { start },
            serve,
            close,
            membership: None,
            _open: open,
        }
    }
}

impl<H, J: Future> Future for ConnectionTask<H, J> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut this = self.as_mut().project();
            match this.stage.as_mut().project() {
                StageProj::Serving { join } => {
                    let output = ready!(join.poll(cx));
                    let closing = (this.close)(output);
                    this.stage.set(Stage::Closing { closing });
                }
                StageProj::Starting { start } => match ready!(start.as_mut().poll(cx)) {
                    Some((started, membership)) => {
                        *this.membership = Some(membership);
                        let join = (this.serve)(started);
                        this.stage.set(Stage::Serving { join });
                    }
                    None => {
                        this.stage.set(Stage::Done);
                        return Poll::Ready(());
                    }
                },
                StageProj::Closing { closing } => {
                    ready!(closing.as_mut().poll(cx));
                    this.stage.set(Stage::Done);
                    // Out of its groups and the server's list now, not when the finished
                    // task is dropped.
                    drop(this.membership.take());
                    return Poll::Ready(());
                }
                StageProj::Done => return Poll::Ready(()),
            }
        }
    }
}
