//! The in-process group layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::future::BoxFuture;
#[cfg(feature = "redis")]
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::history::{History, Joined, Since, Streams};
use super::{GroupError, GroupLayer, GroupStats, Position, Push};
use crate::Connection;

/// Groups of the connections of this process: the default [`GroupLayer`].
///
/// Sending takes a read lock and queues the shared frame for each member without waiting;
/// joining and leaving take a write lock. A group with [`History`] takes the write lock to
/// send too: the push gets its offset, is kept, and reaches the members in one step, so a
/// subscriber that joins with `since` gets every push exactly once, replayed or live.
#[derive(Default)]
pub struct MemoryGroups {
    state: RwLock<Memberships>,
}

#[derive(Default)]
struct Memberships {
    /// Group name → its members by connection id. Ordered: a send walks the members in the
    /// order their connections were accepted, which is the order of their sockets' kernel
    /// objects and descriptors, and a fan-out to thousands then costs the kernel fewer cache
    /// misses than a walk in hash order (perf, 2,000 subscribers: the server's samples went
    /// from 1.09x to 0.98x the hand-written fan-out's; BENCHMARKS.md).
    members: HashMap<Arc<str>, BTreeMap<u64, Member>>,
    /// Connection id → the groups it is in, so that leaving all is cheap.
    groups_of: HashMap<u64, HashSet<Arc<str>>>,
    /// The streams of the groups with history, once configured.
    history: Option<Streams>,
    /// How many members have a [`Guard`]: their pushes are held back or filtered.
    #[cfg(feature = "redis")]
    pending: usize,
}

struct Member {
    connection: Connection,
    /// Whether it subscribed with `since`: its pushes carry their position.
    positioned: bool,
    /// For a member that resumed from a shared history (the Redis layer): its pushes are
    /// held back while what it missed is read, then those the replay already gave are left
    /// out.
    ///
    /// Boxed: rare, and a group's send walks every member (a smaller member is fewer
    /// cache lines per push to a large group).
    #[cfg(feature = "redis")]
    pending: Option<Box<Guard>>,
}

/// How a resuming member's live pushes are treated.
#[cfg(feature = "redis")]
enum Guard {
    /// Held back while its history is read.
    Holding(Vec<Held>),
    /// It has everything up to this offset of this epoch: pushes of the channel that
    /// arrive later than the read (pub/sub lags the stream) are not sent twice. Ends at the
    /// first push past it.
    Above(u64, Arc<str>),
}

/// A positioned push held back for a member whose history is being read.
#[cfg(feature = "redis")]
struct Held {
    offset: u64,
    epoch: Arc<str>,
    push: Push,
}

impl MemoryGroups {
    /// An empty set of groups.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Memberships> {
        crate::lock::read(&self.state)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Memberships> {
        crate::lock::write(&self.state)
    }

    /// Adds a member (synchronously: the memory layer never waits).
    pub(crate) fn add(&self, group: &str, connection: &Connection) {
        self.write().add(group, connection, false);
    }

    /// Adds a member that asked for positions, and queues what it missed, under one lock
    /// with the sends: nothing is missed or doubled between the replay and live pushes.
    pub(crate) fn add_since(&self, group: &str, connection: &Connection, since: &Since) -> Joined {
        let mut state = self.write();
        state.add(group, connection, since.wants_positions());
        if *since == Since::Absent {
            return Joined::default();
        }
        let Some(streams) = state
            .history
            .as_mut()
            .filter(|streams| streams.covers(group))
        else {
            return Joined::without_history(since);
        };
        let recovered = match since {
            Since::Absent | Since::Now => None,
            Since::After(seen) => Some(match streams.missed(group, seen) {
                Some(missed) => {
                    for frame in missed {
                        let _ = connection.try_send_push(&Push::replayed(frame));
                    }
                    true
                }
                None => false,
            }),
        };
        Joined {
            position: Some(streams.position(group)),
            recovered,
        }
    }

    /// The group's position, when it keeps a history.
    pub(crate) fn position_of(&self, group: &str) -> Option<Position> {
        let mut state = self.write();
        let streams = state.history.as_mut()?;
        streams.covers(group).then(|| streams.position(group))
    }

    /// Keeps the pushes of the groups `history` names from now on.
    pub(crate) fn keep_history(&self, history: History) {
        self.write().history = Some(Streams::new(history));
    }
}

impl Memberships {
    fn add(&mut self, group: &str, connection: &Connection, positioned: bool) {
        let state = self;
        let name: Arc<str> = match state.members.get_key_value(group) {
            Some((name, _)) => name.clone(),
            None => Arc::from(group),
        };
        let member = Member {
            connection: connection.clone(),
            positioned,
            #[cfg(feature = "redis")]
            pending: None,
        };
        let members = state.members.entry(name.clone()).or_default();
        // Joining again keeps positions once asked for.
        let positioned = members
            .get(&connection.id())
            .is_some_and(|old| old.positioned)
            || member.positioned;
        let replaced = members.insert(
            connection.id(),
            Member {
                positioned,
                ..member
            },
        );
        #[cfg(feature = "redis")]
        if replaced.is_some_and(|old| old.pending.is_some()) {
            state.pending -= 1;
        }
        #[cfg(not(feature = "redis"))]
        drop(replaced);
        state
            .groups_of
            .entry(connection.id())
            .or_default()
            .insert(name);
    }

    /// Queues `push` for every member; with a position, opted-in members get `positioned`.
    fn deliver(&self, group: &str, push: &Push, positioned: Option<&Push>) -> usize {
        let Some(members) = self.members.get(group) else {
            return 0;
        };
        members
            .iter()
            .filter(|(&id, member)| {
                let push = match positioned {
                    Some(positioned) if member.positioned => positioned,
                    _ => push,
                };
                push.reaches(id) && member.connection.try_send_push(push).is_ok()
            })
            .count()
    }
}

/// What the Redis layer needs of its local members: a shared stream keeps the history, and
/// the members of its groups get their pushes from it in its order.
#[cfg(feature = "redis")]
impl MemoryGroups {
    /// The groups with at least one member.
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.read().members.keys().map(|g| g.to_string()).collect()
    }

    /// Adds a member that asked for positions; with `hold`, its pushes are held back until
    /// [`release`](Self::release) (what it missed is being read).
    pub(crate) fn add_positioned(&self, group: &str, connection: &Connection, hold: bool) {
        let mut state = self.write();
        state.add(group, connection, true);
        if !hold {
            return;
        }
        if let Some(member) = state
            .members
            .get_mut(group)
            .and_then(|members| members.get_mut(&connection.id()))
        {
            member.pending = Some(Box::new(Guard::Holding(Vec::new())));
            state.pending += 1;
        }
    }

    /// Queues `replay` for a member whose pushes were held back, then the held pushes that
    /// came after `read` (the position the replay reflects), and ends the holding; returns
    /// the offset of the last push queued (`read`'s when none was), or `None` when the
    /// member left meanwhile.
    pub(crate) fn release(
        &self,
        group: &str,
        connection: &Connection,
        replay: Vec<Utf8Bytes>,
        read: &Position,
    ) -> Option<u64> {
        let mut state = self.write();
        let Memberships {
            members, pending, ..
        } = &mut *state;
        let member = members
            .get_mut(group)
            .and_then(|members| members.get_mut(&connection.id()))?;
        let guard = member.pending.take().map(|guard| *guard);
        for frame in replay {
            let _ = connection.try_send_push(&Push::replayed(frame));
        }
        let mut last = read.offset;
        let mut epoch: Arc<str> = Arc::from(read.epoch.as_str());
        match guard {
            Some(Guard::Holding(held)) => {
                for held in held {
                    // Older than the read: the replay (or the refetch) has it.
                    if *held.epoch == *read.epoch && held.offset <= read.offset {
                        continue;
                    }
                    last = held.offset;
                    epoch = held.epoch.clone();
                    let _ = connection.try_send_push(&held.push);
                }
            }
            Some(Guard::Above(..)) => {}
            None => *pending += 1,
        }
        // Pushes up to `last` may still come from the channel: they are left out.
        member.pending = Some(Box::new(Guard::Above(last, epoch)));
        Some(last)
    }

    /// Queues a push of a group with history that came from the shared stream at `offset`:
    /// opted-in members get `positioned`, the others `push`; members whose history is
    /// being read hold it.
    pub(crate) fn deliver_at(
        &self,
        group: &str,
        offset: u64,
        epoch: &Arc<str>,
        push: &Push,
        positioned: &Push,
    ) -> usize {
        {
            let state = self.read();
            if state.pending == 0 {
                return state.deliver(group, push, Some(positioned));
            }
        }
        let mut state = self.write();
        let Memberships {
            members, pending, ..
        } = &mut *state;
        let Some(members) = members.get_mut(group) else {
            return 0;
        };
        let mut delivered = 0;
        for (&id, member) in members.iter_mut() {
            if !push.reaches(id) {
                continue;
            }
            match member.pending.as_deref_mut() {
                Some(Guard::Holding(held)) => {
                    held.push(Held {
                        offset,
                        epoch: epoch.clone(),
                        push: positioned.clone(),
                    });
                    delivered += 1;
                    continue;
                }
                Some(Guard::Above(floor, floor_epoch)) => {
                    if **floor_epoch == **epoch && offset <= *floor {
                        continue; // the replay gave it
                    }
                    member.pending = None;
                    *pending -= 1;
                }
                None => {}
            }
            let push = if member.positioned { positioned } else { push };
            if member.connection.try_send_push(push).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues `push` for every local member as it is, without a position (the shared
    /// stream could not take it).
    pub(crate) fn deliver_unpositioned(&self, group: &str, push: &Push) -> usize {
        self.read().deliver(group, push, None)
    }
}

impl MemoryGroups {
    /// Queues `push` for every local member of `group`; a group with history gives it the
    /// next offset first.
    pub(crate) fn deliver(&self, group: &str, push: &Push) -> usize {
        {
            let state = self.read();
            if !state
                .history
                .as_ref()
                .is_some_and(|streams| streams.covers(group))
            {
                return state.deliver(group, push, None);
            }
        }
        let mut state = self.write();
        let Some(streams) = state.history.as_mut() else {
            return state.deliver(group, push, None);
        };
        let (_, frame) = streams.append(group, push.frame());
        let positioned = push.with_frame(frame);
        state.deliver(group, push, Some(&positioned))
    }
}

impl std::fmt::Debug for MemoryGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGroups")
            .field("stats", &self.stats())
            .finish()
    }
}

impl GroupLayer for MemoryGroups {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        self.add(group, connection);
        Box::pin(async { Ok(()) })
    }

    fn leave(&self, group: &str, connection: &Connection) -> bool {
        let mut state = self.write();
        let id = connection.id();
        let Some(members) = state.members.get_mut(group) else {
            return false;
        };
        let removed = members.remove(&id);
        if members.is_empty() {
            state.members.remove(group);
        }
        #[cfg(feature = "redis")]
        if removed.as_ref().is_some_and(|old| old.pending.is_some()) {
            state.pending -= 1;
        }
        let was_member = removed.is_some();
        if let Some(groups) = state.groups_of.get_mut(&id) {
            groups.remove(group);
            if groups.is_empty() {
                state.groups_of.remove(&id);
            }
        }
        was_member
    }

    fn leave_all(&self, connection: &Connection) {
        let mut state = self.write();
        let id = connection.id();
        let Some(groups) = state.groups_of.remove(&id) else {
            return;
        };
        for group in groups {
            if let Some(members) = state.members.get_mut(&group) {
                let removed = members.remove(&id);
                if members.is_empty() {
                    state.members.remove(&group);
                }
                #[cfg(feature = "redis")]
                if removed.is_some_and(|old| old.pending.is_some()) {
                    state.pending -= 1;
                }
                #[cfg(not(feature = "redis"))]
                drop(removed);
            }
        }
    }

    fn send<'a>(&'a self, group: &'a str, push: Push) -> BoxFuture<'a, Result<usize, GroupError>> {
        let delivered = self.deliver(group, &push);
        Box::pin(async move { Ok(delivered) })
    }

    fn groups_of(&self, connection: &Connection) -> Vec<String> {
        self.read()
            .groups_of
            .get(&connection.id())
            .map(|groups| groups.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default()
    }

    fn configure_history(&self, history: History) -> Result<(), GroupError> {
        self.keep_history(history);
        Ok(())
    }

    fn join_since<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Joined, GroupError>> {
        let joined = self.add_since(group, connection, since);
        Box::pin(async move { Ok(joined) })
    }

    fn position<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, GroupError>> {
        let position = self.position_of(group);
        Box::pin(async move { Ok(position) })
    }

    fn member_count(&self, group: &str) -> usize {
        self.read().members.get(group).map_or(0, BTreeMap::len)
    }

    fn is_member(&self, group: &str, connection: &Connection) -> bool {
        self.read()
            .members
            .get(group)
            .is_some_and(|members| members.contains_key(&connection.id()))
    }

    fn stats(&self) -> GroupStats {
        let state = self.read();
        GroupStats {
            groups: state.members.len(),
            memberships: state.members.values().map(BTreeMap::len).sum(),
            connections: state.groups_of.len(),
        }
    }
}
