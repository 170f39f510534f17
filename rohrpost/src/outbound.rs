//! A connection's outbound queue: one ordered queue with two budgets, empty of allocations
//! while idle.
//!
//! - **Replies** (the answers to the client's own requests) are never refused. They count
//!   against the reply backlog, and the reader stops reading the socket while the backlog is
//!   full: a client that pipelines requests without reading slows itself down.
//! - **Pushes** (group messages, a handler's own sends) count against the queue's capacity.
//!   What happens when it is full depends on the push's [`Class`]: a plain push is refused
//!   (the caller disconnects the client), an update of a conflated object replaces its older
//!   queued update, and a volatile push makes room by dropping the oldest queued volatile
//!   push.
//!
//! Order is kept: whatever is removed from the middle leaves a hole that the writer skips,
//! and a replacement is appended at the end, so delivery order stays send order. A tokio
//! mpsc channel allocates a block of 32 slots per connection up front; an idle connection
//! here holds an empty `VecDeque` instead. Pushes take an uncontended lock. The writer says
//! that it waits under the same lock, when it takes the last item or finds none: only the
//! next push wakes it (later ones find it busy), directly through the wake-up state of the
//! join its writer runs in ([`Outbound::wakeup`]). The reader is woken through an
//! `AtomicWaker`, senders waiting for room through a `Notify`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use serde_json::Value;
use tokio::sync::Notify;

#[cfg(doc)]
use crate::server::join::Holder;
use crate::server::join::Wakeup;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::notify::Change;

/// What the writer sends, in order.
#[derive(Debug)]
pub(crate) enum Item {
    /// The reply to one of the client's requests: never dropped.
    Reply(Utf8Bytes),
    /// A message the client did not ask for just now (a group push, a handler's own send).
    Push(Utf8Bytes, Class),
    /// A WebSocket ping (server-side liveness).
    Ping,
    Close(CloseFrame),
}

/// What may be done with a push when the queue is full.
#[derive(Debug, Clone)]
pub(crate) enum Class {
    /// Nothing: a full queue refuses it.
    Plain,
    /// The oldest queued volatile push makes room for it.
    Volatile,
    /// A change to one object; a newer update of the same key replaces a queued one.
    Conflate {
        /// The group and the object's primary key: equal keys are the same object.
        key: Arc<str>,
        change: Change,
    },
}

/// Why an item was not queued; the item comes back.
#[derive(Debug)]
pub(crate) enum Refused {
    Full(Item),
    Closed(Item),
}

/// What queuing a push did besides queuing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Queued {
    /// Older queued updates of the same object that this push replaced.
    pub(crate) conflated: usize,
    /// Volatile pushes dropped to make room (the oldest queued one, or this one when no
    /// volatile push was queued).
    pub(crate) dropped: usize,
}

/// The queued update of each key, by sequence number, while conflating; boxed, so that
/// the queue of an idle connection (most never conflate) carries no empty map.
#[derive(Default)]
// The box is the point: 8 bytes in every queue instead of an empty map's 48.
#[allow(clippy::box_collection)]
struct UpdateIndex(Option<Box<HashMap<Arc<str>, u64>>>);

impl UpdateIndex {
    fn active(&self) -> bool {
        self.0.is_some()
    }

    fn activate(&mut self) {
        self.0.get_or_insert_with(Box::default);
    }

    fn deactivate(&mut self) {
        self.0 = None;
    }

    fn clear(&mut self) {
        if let Some(map) = &mut self.0 {
            map.clear();
        }
    }

    /// Indexes `key` at `seq` while conflating; does nothing otherwise.
    fn insert(&mut self, key: Arc<str>, seq: u64) -> Option<u64> {
        self.0.as_mut()?.insert(key, seq)
    }

    fn get(&self, key: &str) -> Option<u64> {
        self.0.as_ref()?.get(key).copied()
    }

    fn remove(&mut self, key: &str) -> Option<u64> {
        self.0.as_mut()?.remove(key)
    }
}

/// Conflation starts once this share of the push budget is used: 1/2.
const CONFLATE_FROM_DIVISOR: usize = 2;

/// In declaration order (`repr(C)`): what every push and pop touches comes first, so that
/// it shares as few cache lines as possible (a fan-out touches thousands of queues in turn,
/// each of them cold).
#[repr(C)]
struct Queue {
    /// Items in order; `None` is a hole left by an item removed from the middle.
    slots: VecDeque<Option<Item>>,
    /// The sequence number of `slots[0]`: an item's number stays the same while it waits.
    head: u64,
    pushes: usize,
    replies: usize,
    holes: usize,
    /// Since when pushes have used the whole budget.
    full_since: Option<Instant>,
    /// While conflating: the queued update of each key, by sequence number.
    updates: UpdateIndex,
    /// The sequence numbers of queued volatile pushes, oldest first (some may be gone).
    volatile: VecDeque<u64>,
}

/// A queue that keeps more capacity than this after a burst gives it back once drained.
const KEEP_CAPACITY: usize = 64;

/// The writer's side in the reader/writer join (the reader is side 0).
pub(crate) const WRITER_SIDE: usize = 1;

/// In declaration order (`repr(C)`), the fields every push and pop touches first: see
/// [`Queue`].
#[repr(C)]
pub(crate) struct Outbound {
    /// Set while the writer has taken everything queued, cleared by the next push, which
    /// then wakes it; later pushes need not (a writer busy with a full socket is not polled
    /// once per push). Written only under the lock, so that a push and a writer going to
    /// sleep cannot miss each other; read without it by a writer about to wait
    /// ([`next_unless`](Self::next_unless)). Left set by a writer that was woken otherwise,
    /// it costs one spurious wake-up at most.
    writer_waits: AtomicBool,
    closed: AtomicBool,
    /// Whether `reply_backlog` replies wait: written under the lock, read without it (the
    /// reader asks before every request).
    backlog_full: AtomicBool,
    /// How the writer's task is woken: the writer runs as side [`WRITER_SIDE`] of a join
    /// that shares this state (see [`wakeup`](Self::wakeup)). Here rather than in an
    /// allocation of its own: a push reads it right after the queue's flags.
    wakeup: Wakeup,
    capacity: usize,
    reply_backlog: usize,
    items: Mutex<Queue>,
    reader: AtomicWaker,
    room: Notify,
}

impl Outbound {
    /// A queue of `capacity` pushes and `reply_backlog` replies (both at least 1).
    pub(crate) fn new(capacity: usize, reply_backlog: usize) -> Self {
        Self {
            items: Mutex::new(Queue {
                slots: VecDeque::new(),
                head: 0,
                pushes: 0,
                replies: 0,
                holes: 0,
                full_since: None,
                updates: UpdateIndex::default(),
                volatile: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            reply_backlog: reply_backlog.max(1),
            closed: AtomicBool::new(false),
            backlog_full: AtomicBool::new(false),
            writer_waits: AtomicBool::new(false),
            wakeup: Wakeup::new(),
            reader: AtomicWaker::new(),
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
        crate::lock::lock(&self.items)
    }

    /// Queues a reply; refused only when the queue is closed.
    pub(crate) fn push_reply(&self, text: Utf8Bytes) -> Result<(), Refused> {
        if self.is_closed() {
            return Err(Refused::Closed(Item::Reply(text)));
        }
        let mut queue = self.lock();
        queue.append(Item::Reply(text));
        if queue.replies >= self.reply_backlog {
            self.backlog_full.store(true, Ordering::Release);
        }
        self.unlock_and_wake(queue);
        Ok(())
    }

    /// Whether the reply backlog is full: the reader should not read the next request.
    pub(crate) fn backlog_full(&self) -> bool {
        self.backlog_full.load(Ordering::Acquire)
    }

    /// Resolves once the reply backlog has room again (or the queue is closed).
    pub(crate) fn backlog_drained(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            for attempt in 0..2 {
                if self.is_closed() || !self.backlog_full() {
                    return Poll::Ready(());
                }
                if attempt == 0 {
                    self.reader.register(cx.waker());
                }
            }
            Poll::Pending
        })
    }

    /// Queues a plain push, a ping or a close, unless pushes use the whole budget (a ping
    /// and a close are refused then too: the client is not reading) or the queue is closed.
    pub(crate) fn try_push(&self, item: Item) -> Result<(), Refused> {
        self.push_within(item, None).map(|_| ())
    }

    /// Queues a push; a full queue still takes a push it cannot make room for while it has
    /// been full for less than `grace` and holds less than twice its capacity (a burst the
    /// writer is catching up with, rather than a client that does not read).
    pub(crate) fn try_push_with_grace(
        &self,
        item: Item,
        grace: Duration,
    ) -> Result<Queued, Refused> {
        self.push_within(item, Some(grace))
    }

    fn push_within(&self, item: Item, grace: Option<Duration>) -> Result<Queued, Refused> {
        if self.is_closed() {
            return Err(Refused::Closed(item));
        }
        let mut queue = self.lock();
        let mut queued = Queued::default();
        let item = match item {
            // Once begun, conflation goes on until the queue has drained.
            Item::Push(text, Class::Conflate { key, change })
                if queue.updates.active()
                    || queue.pushes >= self.capacity / CONFLATE_FROM_DIVISOR =>
            {
                let (text, conflated) = queue.conflate(&key, change, text);
                queued.conflated = conflated;
                Item::Push(text, Class::Conflate { key, change })
            }
            Item::Push(text, Class::Volatile) if queue.pushes >= self.capacity => {
                queued.dropped = 1;
                if !queue.drop_oldest_volatile() {
                    // No older volatile push to give up: this one goes.
                    return Ok(queued);
                }
                Item::Push(text, Class::Volatile)
            }
            other => other,
        };
        if queue.pushes >= self.capacity {
            let since = *queue.full_since.get_or_insert_with(Instant::now);
            let within = grace.is_some_and(|grace| since.elapsed() < grace);
            if !within || queue.pushes >= self.capacity.saturating_mul(2) {
                return Err(Refused::Full(item));
            }
        }
        queue.append(item);
        queue.compact_if_sparse();
        self.unlock_and_wake(queue);
        Ok(queued)
    }

    /// Queues a plain push, waiting for room; fails only when the queue is closed.
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

    /// The next item, without waiting (and without saying that the writer waits: for
    /// draining a queue the writer is done with).
    pub(crate) fn pop(&self) -> Option<Item> {
        self.pop_marking(false).map(|(item, _)| item)
    }

    /// The writer's next item, and whether it was the last one queued; when it was, or when
    /// nothing was queued, the writer now counts as waiting: the next push wakes it.
    pub(crate) fn take(&self) -> Option<(Item, bool)> {
        self.pop_marking(true)
    }

    fn pop_marking(&self, mark_waiting: bool) -> Option<(Item, bool)> {
        let mut queue = self.lock();
        let pushes_before = queue.pushes;
        let replies_before = queue.replies;
        let item = queue.pop_front();
        // After a burst the queue may hold up to twice its capacity: waiting senders are
        // woken only by the pop that brings it back under capacity, not by every pop.
        let made_room = pushes_before >= self.capacity && queue.pushes < self.capacity;
        let backlog_room =
            replies_before >= self.reply_backlog && queue.replies < self.reply_backlog;
        if queue.pushes < self.capacity && queue.full_since.is_some() {
            queue.full_since = None;
        }
        if backlog_room {
            self.backlog_full.store(false, Ordering::Release);
        }
        let last = queue.slots.is_empty();
        if last {
            queue.release();
            if mark_waiting {
                // Under the lock: the next push finds it.
                self.writer_waits.store(true, Ordering::Relaxed);
            }
        }
        drop(queue);
        if made_room {
            self.room.notify_waiters();
        }
        if backlog_room {
            self.reader.wake();
        }
        item.map(|item| (item, last))
    }

    /// The writer's next item, as from [`take`](Self::take), or `None` as soon as `stopped()`
    /// holds: one wake-up for both, since stopping a connection also wakes its writer
    /// ([`wake_writer`](Self::wake_writer)). The writer is woken through its join's shared
    /// state ([`wakeup`](Self::wakeup)), so it registers no waker at all: it must wait
    /// inside that join. With `drained` (the writer's last [`take`](Self::take) found or
    /// left the queue empty) it does not look at the queue while no push has come since.
    pub(crate) fn next_unless<'a, F: Fn() -> bool + Unpin + 'a>(
        &'a self,
        stopped: F,
        drained: bool,
    ) -> Next<'a, F> {
        Next {
            queue: self,
            stopped,
            look_first: !drained,
        }
    }

    /// Wakes the writer waiting in [`next_unless`](Self::next_unless), to look at its stop
    /// condition.
    pub(crate) fn wake_writer(&self) {
        self.wakeup.wake(WRITER_SIDE);
    }

    /// Ends a push: if the writer waits for it, it no longer does (decided under the lock,
    /// `queue`), and is woken once the lock is released. Plain loads and stores: every write
    /// of the flag happens under the lock.
    fn unlock_and_wake(&self, queue: MutexGuard<'_, Queue>) {
        let waits = self.writer_waits.load(Ordering::Relaxed);
        if waits {
            self.writer_waits.store(false, Ordering::Relaxed);
        }
        drop(queue);
        if waits {
            self.wake_writer();
        }
    }

    /// The wake-up state to join the writer through, as side [`WRITER_SIDE`]
    /// ([`join_with`](crate::server::join::join_with), with a [`Holder`] of this queue): a
    /// push wakes the writer through it and registers nothing.
    pub(crate) fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }

    /// Refuses further items (the writer is done); waiting senders get their item back, and
    /// a reader waiting for the backlog goes on (to find the connection closed).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
        self.reader.wake();
    }
}

/// The writer's wait for its next item: see [`Outbound::next_unless`]. A named future
/// rather than a `poll_fn`, so that it is inlined into the writer's poll.
pub(crate) struct Next<'a, F> {
    queue: &'a Outbound,
    stopped: F,
    /// Whether to look at the queue before saying that the writer waits.
    look_first: bool,
}

impl<F: Fn() -> bool + Unpin> Future for Next<'_, F> {
    type Output = Option<(Item, bool)>;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let queue = this.queue;
        if (this.stopped)() {
            return Poll::Ready(None);
        }
        // Set, the flag says that no push came since the writer took the last item: nothing
        // to look at. (Read as set just after a push cleared it, it is followed by that
        // push's wake-up.)
        let look = this.look_first || !queue.writer_waits.load(Ordering::Relaxed);
        this.look_first = true;
        if look {
            if let Some(taken) = queue.take() {
                return Poll::Ready(Some(taken));
            }
            // Marked waiting under the lock: the next push wakes the writer.
        }
        Poll::Pending
    }
}

impl Queue {
    fn append(&mut self, item: Item) {
        let seq = self.head + self.slots.len() as u64;
        match &item {
            Item::Reply(_) => self.replies += 1,
            Item::Push(..) => self.pushes += 1,
            Item::Ping | Item::Close(_) => {}
        }
        self.index(seq, &item);
        self.slots.push_back(Some(item));
    }

    /// Notes an item queued at `seq` in the indexes: the volatile pushes, and the updates
    /// that may be conflated (only while conflating). A reply is a barrier: an update queued
    /// before it must reach the client before it (the editor's own change comes before its
    /// reply), so no later update may take its place at the end.
    fn index(&mut self, seq: u64, item: &Item) {
        match item {
            Item::Reply(_) => self.updates.clear(),
            Item::Push(_, Class::Volatile) => self.volatile.push_back(seq),
            Item::Push(
                _,
                Class::Conflate {
                    key,
                    change: Change::Update,
                },
            ) => {
                self.updates.insert(key.clone(), seq);
            }
            _ => {}
        }
    }

    fn pop_front(&mut self) -> Option<Item> {
        loop {
            let slot = self.slots.pop_front()?;
            let seq = self.head;
            self.head += 1;
            let Some(item) = slot else {
                self.holes -= 1;
                continue;
            };
            self.forget(seq, &item);
            return Some(item);
        }
    }

    /// Takes the item numbered `seq` out of the middle, leaving a hole.
    fn take(&mut self, seq: u64) -> Option<Item> {
        let index = usize::try_from(seq.checked_sub(self.head)?).ok()?;
        let item = self.slots.get_mut(index)?.take()?;
        self.holes += 1;
        self.forget(seq, &item);
        Some(item)
    }

    /// Updates the counts and indexes for an item that leaves the queue.
    fn forget(&mut self, seq: u64, item: &Item) {
        match item {
            Item::Reply(_) => self.replies -= 1,
            Item::Push(_, class) => {
                self.pushes -= 1;
                match class {
                    Class::Volatile => {
                        if self.volatile.front() == Some(&seq) {
                            self.volatile.pop_front();
                        }
                    }
                    Class::Conflate { key, .. } => {
                        if self.updates.get(key) == Some(seq) {
                            self.updates.remove(key);
                        }
                    }
                    Class::Plain => {}
                }
            }
            Item::Ping | Item::Close(_) => {}
        }
    }

    /// Makes `text`, a change of `key`, replace the queued updates of the same key: an
    /// update takes over their `updated_fields`, a delete simply removes them; a create
    /// replaces nothing. Returns the text to queue and how many updates it replaced.
    fn conflate(&mut self, key: &Arc<str>, change: Change, text: Utf8Bytes) -> (Utf8Bytes, usize) {
        if change == Change::Create {
            return (text, 0);
        }
        let merged = self.start_conflating();
        let Some(seq) = self.updates.remove(key) else {
            return (text, merged);
        };
        let Some(Item::Push(older, _)) = self.take(seq) else {
            return (text, merged);
        };
        if change == Change::Delete {
            return (text, merged + 1);
        }
        (
            merge_updated_fields(&older, &text).unwrap_or(text),
            merged + 1,
        )
    }

    /// Indexes the queued updates by key; where one key has several (with no reply between
    /// them), the newer ones take over the older ones, which leave the queue. Returns how
    /// many left.
    fn start_conflating(&mut self) -> usize {
        if self.updates.active() {
            return 0;
        }
        self.updates.activate();
        let mut merged = 0;
        for index in 0..self.slots.len() {
            let seq = self.head + index as u64;
            let key = match &self.slots[index] {
                Some(Item::Reply(_)) => {
                    self.updates.clear();
                    continue;
                }
                Some(Item::Push(
                    _,
                    Class::Conflate {
                        key,
                        change: Change::Update,
                    },
                )) => key.clone(),
                _ => continue,
            };
            if let Some(older_seq) = self.updates.insert(key, seq) {
                let Some(Item::Push(older, _)) = self.take(older_seq) else {
                    continue;
                };
                merged += 1;
                if let Some(Some(Item::Push(newer, _))) = self.slots.get_mut(index) {
                    if let Some(union) = merge_updated_fields(&older, newer) {
                        *newer = union;
                    }
                }
            }
        }
        merged
    }

    /// Drops the oldest queued volatile push; returns whether there was one.
    fn drop_oldest_volatile(&mut self) -> bool {
        while let Some(seq) = self.volatile.pop_front() {
            if self.take(seq).is_some() {
                return true;
            }
        }
        false
    }

    /// Once holes outnumber the items, closes them up (renumbering the items), so that a
    /// long run of conflated updates does not grow the queue.
    fn compact_if_sparse(&mut self) {
        if self.holes <= KEEP_CAPACITY || self.holes <= self.slots.len() / 2 {
            return;
        }
        self.slots.retain(Option::is_some);
        self.holes = 0;
        self.updates.clear();
        self.volatile.clear();
        let slots = std::mem::take(&mut self.slots);
        for (index, item) in slots.iter().flatten().enumerate() {
            self.index(self.head + index as u64, item);
        }
        self.slots = slots;
    }

    /// Gives back what a drained queue held on to after a burst.
    fn release(&mut self) {
        if self.slots.capacity() > KEEP_CAPACITY {
            self.slots = VecDeque::new();
        }
        if self.updates.active() {
            self.updates.deactivate();
        }
        if self.volatile.capacity() > KEEP_CAPACITY {
            self.volatile = VecDeque::new();
        }
    }
}

/// The newer update with the union of both updates' `data.object.updated_fields` (the
/// older one's first); `None` when the newer one needs no change. Where either update
/// named no fields, the object may have changed anywhere: the merged one names none. Only
/// `data` is rewritten: the frame's other members keep their bytes and their order.
fn merge_updated_fields(older: &str, newer: &str) -> Option<Utf8Bytes> {
    #[derive(serde::Deserialize)]
    struct Frame {
        data: Option<Value>,
    }
    let fields = |data: &Value| -> Option<Vec<Value>> {
        data.pointer("/object/updated_fields")?.as_array().cloned()
    };
    let older = serde_json::from_str::<Frame>(older).ok()?.data?;
    let mut data = serde_json::from_str::<Frame>(newer).ok()?.data?;
    let object = data.pointer_mut("/object")?.as_object_mut()?;
    match (fields(&older), object.get("updated_fields").cloned()) {
        (Some(mut union), Some(Value::Array(new))) => {
            for field in new.iter() {
                if !union.contains(field) {
                    union.push(field.clone());
                }
            }
            if union == new {
                return None;
            }
            object.insert("updated_fields".into(), Value::Array(union));
        }
        (None, Some(_)) => {
            object.remove("updated_fields");
        }
        (Some(_), Some(_)) | (_, None) => return None,
    }
    let data = serde_json::to_string(&data).ok()?;
    crate::message::rewrite_frame(newer, &[("data", &data)]).map(Utf8Bytes::from)
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.lock();
        f.debug_struct("Outbound")
            .field("pushes", &queue.pushes)
            .field("replies", &queue.replies)
            .field("capacity", &self.capacity)
            .field("reply_backlog", &self.reply_backlog)
            .field("closed", &self.is_closed())
            .field("slots", &queue.slots.len())
            .field("writer_waits", &self.writer_waits.load(Ordering::Relaxed))
            .finish()
    }
}

/// For the tests: a join woken through a queue of their own.
#[cfg(test)]
impl crate::server::join::Holder for Arc<Outbound> {
    fn wakeup(&self) -> &Wakeup {
        &self.wakeup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Item {
        Item::Push(Utf8Bytes::from(n.to_string()), Class::Plain)
    }

    fn popped(queue: &Outbound) -> Option<String> {
        match queue.pop()? {
            Item::Reply(text) | Item::Push(text, _) => Some(text.to_string()),
            Item::Ping => Some("ping".into()),
            Item::Close(_) => Some("close".into()),
        }
    }

    fn drain(queue: &Outbound) -> Vec<String> {
        std::iter::from_fn(|| popped(queue)).collect()
    }

    fn change(key: &str, change: Change, fields: &[&str], title: &str) -> Item {
        let frame = serde_json::json!({
            "id": 1,
            "type": "subscription-update",
            "data": {"type": change.as_str(), "group": "todo", "object": {
                "id": key, "title": title, "updated_fields": fields,
            }},
        });
        Item::Push(
            Utf8Bytes::from(frame.to_string()),
            Class::Conflate {
                key: Arc::from(key),
                change,
            },
        )
    }

    /// Queues a push with no burst grace; it must be taken.
    fn offer(queue: &Outbound, item: Item) -> Queued {
        queue.try_push_with_grace(item, Duration::ZERO).unwrap()
    }

    fn volatile(n: usize) -> Item {
        Item::Push(Utf8Bytes::from(n.to_string()), Class::Volatile)
    }

    fn parsed(queue: &Outbound) -> Vec<Value> {
        drain(queue)
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect()
    }

    #[test]
    fn bounded_and_in_order() {
        let queue = Outbound::new(2, 2);
        assert!(queue.try_push(text(1)).is_ok());
        assert!(queue.try_push(text(2)).is_ok());
        assert!(matches!(queue.try_push(text(3)), Err(Refused::Full(_))));
        assert_eq!(popped(&queue).as_deref(), Some("1"));
        assert!(queue.try_push(text(3)).is_ok());
        assert_eq!(drain(&queue), ["2", "3"]);
    }

    #[test]
    fn replies_are_never_refused_and_fill_only_the_backlog() {
        let queue = Outbound::new(1, 2);
        queue.try_push(text(0)).unwrap();
        for n in 1..=3 {
            queue.push_reply(Utf8Bytes::from(n.to_string())).unwrap();
        }
        assert!(queue.backlog_full());
        assert!(matches!(queue.try_push(text(4)), Err(Refused::Full(_))));
        assert_eq!(popped(&queue).as_deref(), Some("0"));
        assert_eq!(popped(&queue).as_deref(), Some("1"));
        assert!(queue.backlog_full(), "two replies still wait");
        assert_eq!(popped(&queue).as_deref(), Some("2"));
        assert!(!queue.backlog_full());
        assert_eq!(drain(&queue), ["3"]);
    }

    #[test]
    fn a_burst_overflows_within_the_grace_and_twice_the_capacity() {
        let queue = Outbound::new(2, 2);
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
        let queue = Outbound::new(1, 1);
        queue.try_push(text(0)).unwrap();
        assert!(matches!(
            queue.try_push_with_grace(text(1), Duration::ZERO),
            Err(Refused::Full(_))
        ));
    }

    #[test]
    fn updates_of_one_object_conflate_into_the_newest_with_every_field() {
        let queue = Outbound::new(4, 4);
        offer(&queue, text(0));
        offer(&queue, change("1", Change::Update, &["title"], "a"));
        // From half the budget on, a newer update of the same key replaces the queued one.
        let queued = offer(&queue, change("1", Change::Update, &["done"], "b"));
        assert_eq!(queued.conflated, 1);
        offer(&queue, change("2", Change::Update, &["title"], "x"));
        for title in ["c", "d", "e"] {
            let queued = offer(&queue, change("1", Change::Update, &["title"], title));
            assert_eq!(queued.conflated, 1);
        }
        let frames = parsed(&queue);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], 0);
        assert_eq!(frames[1]["data"]["object"]["id"], "2");
        let last = &frames[2]["data"]["object"];
        assert_eq!(last["title"], "e");
        assert_eq!(last["updated_fields"], serde_json::json!(["title", "done"]));
    }

    #[test]
    fn an_update_never_moves_past_a_reply() {
        let queue = Outbound::new(2, 4);
        offer(&queue, change("1", Change::Update, &["title"], "a"));
        queue.push_reply(Utf8Bytes::from("\"reply\"")).unwrap();
        let queued = offer(&queue, change("1", Change::Update, &["title"], "b"));
        assert_eq!(queued.conflated, 0, "the update before the reply stays");
        let titles: Vec<Value> = parsed(&queue)
            .iter()
            .map(|frame| {
                frame
                    .pointer("/data/object/title")
                    .cloned()
                    .unwrap_or(frame.clone())
            })
            .collect();
        assert_eq!(titles, ["a", "reply", "b"]);
    }

    #[test]
    fn a_merged_update_keeps_the_frames_own_bytes_but_its_data() {
        let older = r#"{"id":1,"type":"subscription-update","data":{"group":"g","object":{"id":1,"updated_fields":["a"]},"type":"update"}}"#;
        let newer = r#"{"id":2,"type":"subscription-update","data":{"group":"g","object":{"id":1,"updated_fields":["b"]},"type":"update"}}"#;
        assert_eq!(
            merge_updated_fields(older, newer).unwrap().as_str(),
            r#"{"id":2,"type":"subscription-update","data":{"group":"g","object":{"id":1,"updated_fields":["a","b"]},"type":"update"}}"#
        );
        assert_eq!(merge_updated_fields(older, older), None, "nothing to add");
    }

    #[test]
    fn a_delete_removes_queued_updates_and_creations_stay() {
        let queue = Outbound::new(2, 2);
        offer(&queue, change("1", Change::Create, &[], "a"));
        offer(&queue, change("1", Change::Update, &["title"], "b"));
        let queued = offer(&queue, change("1", Change::Delete, &[], "b"));
        assert_eq!(queued.conflated, 1);
        let kinds: Vec<Value> = parsed(&queue)
            .iter()
            .map(|frame| frame["data"]["type"].clone())
            .collect();
        assert_eq!(kinds, ["create", "delete"]);
    }

    #[test]
    fn a_full_queue_with_nothing_to_conflate_refuses() {
        let queue = Outbound::new(2, 2);
        offer(&queue, change("1", Change::Create, &[], "a"));
        offer(&queue, change("2", Change::Create, &[], "b"));
        assert!(matches!(
            queue.try_push_with_grace(change("3", Change::Update, &["title"], "c"), Duration::ZERO),
            Err(Refused::Full(_))
        ));
    }

    #[test]
    fn updates_queued_before_conflation_began_are_merged_too() {
        let queue = Outbound::new(6, 6);
        for (fields, title) in [(&["a"], "1"), (&["b"], "2"), (&["c"], "3")] {
            offer(&queue, change("k", Change::Update, fields, title));
        }
        // The fourth push crosses half the budget: the three queued ones collapse first.
        let queued = offer(&queue, change("k", Change::Update, &["d"], "4"));
        assert_eq!(queued.conflated, 3, "every replaced update is counted");
        let frames = parsed(&queue);
        assert_eq!(frames.len(), 1);
        let object = &frames[0]["data"]["object"];
        assert_eq!(object["title"], "4");
        assert_eq!(
            object["updated_fields"],
            serde_json::json!(["a", "b", "c", "d"])
        );
    }

    #[test]
    fn a_long_run_of_conflated_updates_keeps_the_queue_small() {
        let queue = Outbound::new(4, 4);
        for n in 0..10_000 {
            offer(
                &queue,
                change("1", Change::Update, &["title"], &n.to_string()),
            );
            offer(
                &queue,
                change("2", Change::Update, &["title"], &n.to_string()),
            );
        }
        assert!(queue.lock().slots.len() <= 2 * KEEP_CAPACITY + 8);
        let titles: Vec<Value> = parsed(&queue)
            .iter()
            .map(|frame| frame["data"]["object"]["title"].clone())
            .collect();
        assert_eq!(titles, ["9999", "9999"]);
    }

    #[test]
    fn volatile_pushes_drop_the_oldest_and_keep_order() {
        let queue = Outbound::new(3, 3);
        queue.try_push(text(100)).unwrap();
        let mut dropped = 0;
        for n in 0..10 {
            dropped += offer(&queue, volatile(n)).dropped;
        }
        assert_eq!(dropped, 8);
        assert_eq!(drain(&queue), ["100", "8", "9"]);
        // With no volatile push queued, the new one is the one that goes.
        let queue = Outbound::new(1, 1);
        queue.try_push(text(1)).unwrap();
        let queued = offer(&queue, volatile(2));
        assert_eq!(queued.dropped, 1);
        assert_eq!(drain(&queue), ["1"]);
    }

    #[test]
    fn closed_refuses() {
        let queue = Outbound::new(2, 2);
        queue.close();
        assert!(matches!(queue.try_push(text(1)), Err(Refused::Closed(_))));
        assert!(matches!(
            queue.push_reply(Utf8Bytes::from("x")),
            Err(Refused::Closed(_))
        ));
    }

    #[test]
    fn gives_back_capacity_after_a_burst() {
        let queue = Outbound::new(10_000, 1);
        for n in 0..1000 {
            queue.try_push(text(n)).unwrap();
        }
        while queue.pop().is_some() {}
        assert_eq!(queue.lock().slots.capacity(), 0);
    }

    #[tokio::test]
    async fn push_waits_for_room() {
        let queue = Arc::new(Outbound::new(1, 1));
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
    async fn the_reader_waits_for_the_backlog_to_drain() {
        let queue = Arc::new(Outbound::new(1, 1));
        queue.push_reply(Utf8Bytes::from("1")).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.backlog_drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(popped(&queue).as_deref(), Some("1"));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn push_fails_when_closed_while_waiting() {
        let queue = Arc::new(Outbound::new(1, 1));
        queue.try_push(text(1)).unwrap();
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.push(text(2)).await.is_err() }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(waiting.await.unwrap());
    }

    /// A writer the way the server runs one: inside a join, woken only through it, taking
    /// every item until the queue is stopped.
    async fn write_all(queue: Arc<Outbound>, stopped: Arc<AtomicBool>) -> Vec<u64> {
        let holder = queue.clone();
        let writer = async {
            let mut taken = Vec::new();
            let mut record = |item| {
                if let Item::Push(text, _) = item {
                    taken.push(text.parse().unwrap());
                }
            };
            let mut drained = false;
            loop {
                let next = queue.next_unless(|| stopped.load(Ordering::SeqCst), drained);
                let Some((item, mut last)) = next.await else {
                    return taken;
                };
                record(item);
                // Like the writer's batch: take what else is there before waiting again.
                while !last {
                    let Some((item, was_last)) = queue.take() else {
                        break;
                    };
                    record(item);
                    last = was_last;
                }
                // Like the writer's flush, which may wait for the socket: a push meanwhile
                // finds the writer waiting, and its wake-up goes to the flush.
                tokio::task::yield_now().await;
                drained = true;
            }
        };
        crate::server::join::join_with(holder, async {}, writer)
            .await
            .1
    }

    #[test]
    fn pushes_from_other_threads_always_wake_the_waiting_writer() {
        // Each round races three pushing threads against a writer that goes to sleep after
        // every drained batch; a lost wake-up leaves the writer asleep and the round times
        // out.
        const THREADS: u64 = 3;
        const PER_THREAD: u64 = 2_000;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..20 {
            let queue = Arc::new(Outbound::new(usize::MAX / 4, 1));
            let stopped = Arc::new(AtomicBool::new(false));
            let writer = runtime.spawn(write_all(queue.clone(), stopped.clone()));
            let pushers: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let queue = queue.clone();
                    std::thread::spawn(move || {
                        for n in 0..PER_THREAD {
                            let item = Item::Push(
                                Utf8Bytes::from((thread * PER_THREAD + n).to_string()),
                                Class::Plain,
                            );
                            queue.try_push(item).unwrap();
                            if n % 64 == 0 {
                                std::thread::yield_now();
                            }
                        }
                    })
                })
                .collect();
            for pusher in pushers {
                pusher.join().unwrap();
            }
            // Every item must reach the writer before it is told to stop.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !queue.lock().slots.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the writer was not woken: {queue:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            stopped.store(true, Ordering::SeqCst);
            queue.wake_writer();
            let mut taken = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), writer).await })
                .expect("a stopped writer ends")
                .unwrap();
            taken.sort_unstable();
            assert_eq!(taken, (0..THREADS * PER_THREAD).collect::<Vec<_>>());
        }
    }

    /// Counts its wake-ups.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_writer_waits_from_its_last_item_and_only_the_next_push_wakes_it() {
        let queue = Arc::new(Outbound::new(8, 8));
        let wakes = Arc::new(Counter(Default::default()));
        let waker = std::task::Waker::from(wakes.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        // The writer's task, woken through the queue's wake-up state.
        let mut task = Box::pin(crate::server::join::join_with(
            queue.clone(),
            std::future::pending::<()>(),
            std::future::pending::<()>(),
        ));
        assert!(task.as_mut().poll(&mut cx).is_pending());
        offer(&queue, text(1));
        offer(&queue, text(2));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "the writer did not wait yet"
        );
        let (first, last) = queue.take().unwrap();
        assert!(matches!(first, Item::Push(text, _) if text == "1"));
        assert!(!last);
        assert!(!queue.writer_waits.load(Ordering::SeqCst));
        let (second, last) = queue.take().unwrap();
        assert!(matches!(second, Item::Push(text, _) if text == "2"));
        assert!(last, "the second item was the last one");
        assert!(queue.writer_waits.load(Ordering::SeqCst));
        // The next push wakes the writer; the one after it finds the writer busy.
        offer(&queue, text(3));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(!queue.writer_waits.load(Ordering::SeqCst));
        offer(&queue, text(4));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(drain(&queue), ["3", "4"]);
        // Finding nothing marks the writer waiting too; `pop` (for a queue the writer is
        // done with) does not.
        assert!(queue.take().is_none());
        assert!(queue.writer_waits.load(Ordering::SeqCst));
        offer(&queue, text(5));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert_eq!(popped(&queue).as_deref(), Some("5"));
        assert!(!queue.writer_waits.load(Ordering::SeqCst));
    }

    #[test]
    fn a_writer_that_finds_only_holes_waits() {
        let queue = Outbound::new(4, 4);
        offer(&queue, text(1));
        offer(&queue, text(2));
        // The last item leaves a hole at the end (as a conflated update can).
        {
            let mut slots = queue.lock();
            let last = slots.head + 1;
            assert!(slots.take(last).is_some());
        }
        // The hole is still queued: "1" is not the last item, and the writer does not wait.
        let (first, last) = queue.take().unwrap();
        assert!(matches!(first, Item::Push(text, _) if text == "1"));
        assert!(!last);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        // As after a drained batch; but the writer was not marked waiting, so it looks, finds
        // only the hole, and waits.
        let next = queue.next_unless(|| false, true);
        tokio::pin!(next);
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert!(queue.writer_waits.load(Ordering::SeqCst));
        // The next push finds it waiting.
        offer(&queue, text(3));
        assert!(!queue.writer_waits.load(Ordering::SeqCst));
        assert!(matches!(
            next.as_mut().poll(&mut cx),
            Poll::Ready(Some((Item::Push(text, _), true))) if text == "3"
        ));
    }
}
