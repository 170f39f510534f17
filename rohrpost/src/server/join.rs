//! Joining a connection's reader and writer in one task, polling only the side whose
//! waker fired. A push to a thousand group members wakes a thousand writers; with a plain
//! join, each wake-up would also poll the idle reader (its socket, its signals, its ping
//! timer) for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

/// Which side of a [`Join`] was woken, and the task to wake. Shared with whatever wakes a
/// side directly, without a waker of its own: the outbound queue holds it and wakes the
/// writer side through it ([`Outbound::wakeup`]), and the join reaches it through the
/// connection ([`Holder`]), so that it sits in a cache line every push touches anyway.
///
/// A task is given the same waker at every poll, so the first poll's waker is kept and
/// woken by reference: no registration per poll, no waker cloned and dropped per wake-up.
/// Should the join ever be polled with another waker (moved to another task), it falls back
/// to registering at every poll, and wakes go through that registration.
///
/// [`Outbound::wakeup`]: crate::outbound::Outbound::wakeup
pub(crate) struct Wakeup {
    woken: [AtomicBool; 2],
    /// The waker of the first poll.
    task: OnceLock<Waker>,
    /// The join was polled with a waker that does not wake `task`.
    moved: AtomicBool,
    /// Registered at the first poll (a wake-up racing with it finds `task` still unset) and,
    /// once `moved`, at every poll.
    registered: AtomicWaker,
}

impl Wakeup {
    /// Both sides marked woken: the first poll polls both.
    pub(crate) fn new() -> Self {
        Self {
            woken: [AtomicBool::new(true), AtomicBool::new(true)],
            task: OnceLock::new(),
            moved: AtomicBool::new(false),
            registered: AtomicWaker::new(),
        }
    }

    /// Marks `side` (0 for the first future, 1 for the second) as woken and wakes the task.
    pub(crate) fn wake(&self, side: usize) {
        // Sequentially consistent with the poll's `moved` and flag: a wake-up that reads
        // `moved` before the poll sets it marked its side before the poll looks.
        self.woken[side].store(true, Ordering::SeqCst);
        match self.task.get() {
            Some(task) if !self.moved.load(Ordering::SeqCst) => task.wake_by_ref(),
            _ => self.registered.wake(),
        }
    }

    /// Makes sure that a wake-up from now on wakes `waker`'s task; before the sides are
    /// looked at.
    fn register(&self, waker: &Waker) {
        if !self.moved.load(Ordering::SeqCst) {
            match self.task.get() {
                Some(task) if task.will_wake(waker) => return,
                Some(_) => self.moved.store(true, Ordering::SeqCst),
                None => {
                    self.registered.register(waker);
                    let _ = self.task.set(waker.clone());
                    return;
                }
            }
        }
        self.registered.register(waker);
    }
}

/// An owning handle to a [`Wakeup`], which the join and its sides' wakers keep alive: a
/// connection, whose outbound queue holds it (or, in tests, the state in an `Arc`). A holder must
/// not own, directly or through what it holds, a side's waker beyond the join's life (a
/// reference cycle): the connection lets go of those it registered when its task ends.
pub(crate) trait Holder: Send + Sync + 'static {
    fn wakeup(&self) -> &Wakeup;
}

#[cfg(test)]
impl Holder for Arc<Wakeup> {
    fn wakeup(&self) -> &Wakeup {
        self
    }
}

/// One side's waker: marks its side as woken, then wakes the task.
struct Side<H> {
    shared: H,
    index: usize,
}

impl<H: Holder> Wake for Side<H> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.wakeup().wake(self.index);
    }
}

pin_project! {
    /// Runs both futures to completion in the calling task, like `futures::join`, but polls
    /// each only when it was woken (both at the first poll). A struct rather than an
    /// `async fn`, so that the two futures are stored once, in place. In declaration order
    /// (`repr(C)`): what every poll reads, then the second future (the writer, polled for
    /// every push to an idle writer), then the first (the reader, larger and polled less
    /// often), then the outputs (written once), so that a poll of the writer touches few
    /// cache lines.
    #[repr(C)]
    pub(crate) struct Join<A: Future, B: Future, H> {
        shared: H,
        wakers: [Waker; 2],
        // Whether each side is done (its output waits below).
        done: [bool; 2],
        #[pin]
        b: B,
        #[pin]
        a: A,
        a_output: Option<A::Output>,
        b_output: Option<B::Output>,
    }
}

/// Joins `a` and `b`; see [`Join`].
#[cfg(test)]
pub(crate) fn join<A: Future, B: Future>(a: A, b: B) -> Join<A, B, Arc<Wakeup>> {
    join_with(Arc::new(Wakeup::new()), a, b)
}

/// Joins `a` and `b`, woken through `shared` as well as through their own wakers.
pub(crate) fn join_with<A: Future, B: Future, H: Holder + Clone>(
    shared: H,
    a: A,
    b: B,
) -> Join<A, B, H> {
    let side = |index| {
        Waker::from(Arc::new(Side {
            shared: shared.clone(),
            index,
        }))
    };
    let wakers = [side(0), side(1)];
    Join {
        a,
        b,
        done: [false; 2],
        a_output: None,
        b_output: None,
        shared,
        wakers,
    }
}

impl<A: Future, B: Future, H: Holder> Future for Join<A, B, H> {
    type Output = (A::Output, B::Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let shared = this.shared.wakeup();
        shared.register(cx.waker());
        if !this.done[0] && shared.woken[0].swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = this.a.poll(&mut Context::from_waker(&this.wakers[0])) {
                *this.a_output = Some(output);
                this.done[0] = true;
            }
        }
        if !this.done[1] && shared.woken[1].swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = this.b.poll(&mut Context::from_waker(&this.wakers[1])) {
                *this.b_output = Some(output);
                this.done[1] = true;
            }
        }
        if this.done == &[true; 2] {
            if let (Some(a), Some(b)) = (this.a_output.take(), this.b_output.take()) {
                return Poll::Ready((a, b));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, woken through `wake`.
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: AtomicWaker,
    }

    impl Probe {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                polls: AtomicUsize::new(0),
                ready: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            })
        }

        async fn run(self: Arc<Self>) -> usize {
            poll_fn(|cx| {
                self.polls.fetch_add(1, Ordering::SeqCst);
                self.waker.register(cx.waker());
                if self.ready.load(Ordering::SeqCst) {
                    Poll::Ready(self.polls.load(Ordering::SeqCst))
                } else {
                    Poll::Pending
                }
            })
            .await
        }

        fn finish(&self) {
            self.ready.store(true, Ordering::SeqCst);
            self.waker.wake();
        }

        fn nudge(&self) {
            self.waker.wake();
        }
    }

    #[tokio::test]
    async fn only_the_woken_side_is_polled_and_both_outputs_come_back() {
        let (reader, writer) = (Probe::new(), Probe::new());
        let joined = tokio::spawn(join(reader.clone().run(), writer.clone().run()));
        tokio::task::yield_now().await;
        while reader.polls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Ten wake-ups of the writer: the reader is not polled again.
        for n in 2..12 {
            writer.nudge();
            while writer.polls.load(Ordering::SeqCst) < n {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(reader.polls.load(Ordering::SeqCst), 1);
        writer.finish();
        reader.finish();
        let (reader_polls, writer_polls) = joined.await.unwrap();
        assert_eq!(reader_polls, 2);
        assert_eq!(writer_polls, 12);
    }

    /// Counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn every_wake_up_reaches_the_task_and_a_moved_join_its_new_task() {
        let wakeup = Arc::new(Wakeup::new());
        let mut joined = Box::pin(join_with(
            wakeup.clone(),
            std::future::pending::<()>(),
            std::future::pending::<()>(),
        ));
        let mut pending_after_poll_with = |waker: &Waker| {
            joined
                .as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_pending()
        };
        let (first, first_waker) = counting();
        assert!(pending_after_poll_with(&first_waker));
        // The first poll's waker is woken by every wake-up, though registered only once.
        for n in 1..=3 {
            wakeup.wake(1);
            assert_eq!(first.0.load(Ordering::SeqCst), n);
            assert!(pending_after_poll_with(&first_waker));
        }
        // Polled with another task's waker: wake-ups go to that one from now on.
        let (second, second_waker) = counting();
        assert!(pending_after_poll_with(&second_waker));
        wakeup.wake(0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(first.0.load(Ordering::SeqCst), 3);
        assert!(pending_after_poll_with(&second_waker));
        wakeup.wake(1);
        assert_eq!(second.0.load(Ordering::SeqCst), 2);
    }
}
