//! A connection's outbound queue: bounded, ordered, and empty of allocations while idle.
//!
//! A tokio mpsc channel allocates a block of 32 slots per connection up front; an idle
//! connection here holds an empty `VecDeque` instead. Pushes take an uncontended lock; the
//! writer is woken through an `AtomicWaker`, and senders waiting for room through a
//! `Notify`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What the writer sends, in order.
#[derive(Debug)]
pub(crate) enum Item {
    Text(Utf8Bytes),
    /// A WebSocket ping (server-side liveness).
    Ping,
    Close(CloseFrame),
}

/// Why an item was not queued; the item comes back.
#[derive(Debug)]
pub(crate) enum Refused {
    Full(Item),
    Closed(Item),
}

struct Queue {
    items: VecDeque<Item>,
    /// Since when the queue has held `capacity` items or more.
    full_since: Option<Instant>,
}

/// A queue that keeps more capacity than this after a burst gives it back once drained.
const KEEP_CAPACITY: usize = 64;

pub(crate) struct Outbound {
    items: Mutex<Queue>,
    capacity: usize,
    closed: AtomicBool,
    writer: AtomicWaker,
    room: Notify,
}

impl Outbound {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(Queue {
                items: VecDeque::new(),
                full_since: None,
            }),
            capacity,
            closed: AtomicBool::new(false),
            writer: AtomicWaker::new(),
            room: Notify::new(),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every operation under the lock is a single push or pop: a panic elsewhere cannot
        // leave the queue half-updated.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` unless the queue is full or closed.
    pub(crate) fn try_push(&self, item: Item) -> Result<(), Refused> {
        self.push_within(item, None)
    }

    /// Queues `item`; a full queue still takes it while it has been full for less than
    /// `grace` and holds less than twice its capacity (a burst the writer is catching up
    /// with, rather than a client that does not read).
    pub(crate) fn try_push_with_grace(&self, item: Item, grace: Duration) -> Result<(), Refused> {
        self.push_within(item, Some(grace))
    }

    fn push_within(&self, item: Item, grace: Option<Duration>) -> Result<(), Refused> {
        if self.is_closed() {
            return Err(Refused::Closed(item));
        }
        let mut queue = self.lock();
        let len = queue.items.len();
        if len >= self.capacity {
            let since = *queue.full_since.get_or_insert_with(Instant::now);
            let within = grace.is_some_and(|grace| since.elapsed() < grace);
            if !within || len >= self.capacity.saturating_mul(2) {
                return Err(Refused::Full(item));
            }
        }
        queue.items.push_back(item);
        drop(queue);
        self.writer.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room; fails only when the queue is closed.
    pub(crate) async fn push(&self, mut item: Item) -> Result<(), Item> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before trying, so that room made in between is not missed.
            room.as_mut().enable();
            match self.try_push(item) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(back)) => return Err(back),
                Err(Refused::Full(back)) => item = back,
            }
            room.await;
        }
    }

    /// The next item, for the writer, without waiting.
    pub(crate) fn pop(&self) -> Option<Item> {
        let mut queue = self.lock();
        let was_full = queue.items.len() >= self.capacity;
        let item = queue.items.pop_front();
        // After a burst the queue may hold up to twice its capacity: waiting senders are
        // woken only by the pop that brings it back under capacity, not by every pop.
        let made_room = was_full && queue.items.len() < self.capacity;
        if queue.items.len() < self.capacity {
            queue.full_since = None;
        }
        if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        drop(queue);
        if made_room {
            self.room.notify_waiters();
        }
        item
    }

    /// The next item, for the writer, waiting for one.
    pub(crate) fn next(&self) -> impl Future<Output = Item> + '_ {
        std::future::poll_fn(move |cx| {
            if let Some(item) = self.pop() {
                return Poll::Ready(item);
            }
            self.writer.register(cx.waker());
            match self.pop() {
                Some(item) => Poll::Ready(item),
                None => Poll::Pending,
            }
        })
    }

    /// Refuses further items (the writer is done); waiting senders get their item back.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("queued", &self.lock().items.len())
            .field("capacity", &self.capacity)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Item {
        Item::Text(Utf8Bytes::from(n.to_string()))
    }

    fn popped(queue: &Outbound) -> Option<String> {
        match queue.pop()? {
            Item::Text(text) => Some(text.to_string()),
            Item::Ping => Some("ping".into()),
            Item::Close(_) => Some("close".into()),
        }
    }

    #[test]
    fn bounded_and_in_order() {
        let queue = Outbound::new(2);
        assert!(queue.try_push(text(1)).is_ok());
        assert!(queue.try_push(text(2)).is_ok());
        assert!(matches!(queue.try_push(text(3)), Err(Refused::Full(_))));
        assert_eq!(popped(&queue).as_deref(), Some("1"));
        assert!(queue.try_push(text(3)).is_ok());
        assert_eq!(popped(&queue).as_deref(), Some("2"));
        assert_eq!(popped(&queue).as_deref(), Some("3"));
        assert_eq!(popped(&queue), None);
    }

    #[test]
    fn a_burst_overflows_within_the_grace_and_twice_the_capacity() {
        let queue = Outbound::new(2);
        let grace = Duration::from_secs(60);
        for n in 0..4 {
            queue.try_push_with_grace(text(n), grace).unwrap();
        }
        assert!(matches!(
            queue.try_push_with_grace(text(4), grace),
            Err(Refused::Full(_))
        ));
        assert!(matches!(queue.try_push(text(4)), Err(Refused::Full(_))));
        // Past the grace, a full queue refuses.
        let queue = Outbound::new(1);
        queue.try_push(text(0)).unwrap();
        assert!(matches!(
            queue.try_push_with_grace(text(1), Duration::ZERO),
            Err(Refused::Full(_))
        ));
    }

    #[test]
    fn closed_refuses() {
        let queue = Outbound::new(2);
        queue.close();
        assert!(matches!(queue.try_push(text(1)), Err(Refused::Closed(_))));
    }

    #[test]
    fn gives_back_capacity_after_a_burst() {
        let queue = Outbound::new(10_000);
        for n in 0..1000 {
            queue.try_push(text(n)).unwrap();
        }
        while queue.pop().is_some() {}
        assert_eq!(queue.lock().items.capacity(), 0);
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let queue = std::sync::Arc::new(Outbound::new(1));
        queue.try_push(text(1)).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(text(2)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(popped(&queue).as_deref(), Some("1"));
        assert!(waiting.await.unwrap());
        assert_eq!(popped(&queue).as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn push_fails_when_closed_while_waiting() {
        let queue = std::sync::Arc::new(Outbound::new(1));
        queue.try_push(text(1)).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(text(2)).await.is_err() }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(waiting.await.unwrap());
    }
}
