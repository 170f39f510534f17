//! The in-process group layer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::future::BoxFuture;

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
    /// Group name → its members by connection id.
    members: HashMap<Arc<str>, HashMap<u64, Member>>,
    /// Connection id → the groups it is in, so that leaving all is cheap.
    groups_of: HashMap<u64, HashSet<Arc<str>>>,
    /// The streams of the groups with history, once configured.
    history: Option<Streams>,
}

struct Member {
    connection: Connection,
    /// Whether it subscribed with `since`: its pushes carry their position.
    positioned: bool,
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
            let recovered = matches!(since, Since::After(_)).then_some(false);
            return Joined {
                position: None,
                recovered,
            };
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
        };
        let members = state.members.entry(name.clone()).or_default();
        // Joining again keeps positions once asked for.
        let positioned = members
            .get(&connection.id())
            .is_some_and(|old| old.positioned)
            || member.positioned;
        members.insert(
            connection.id(),
            Member {
                positioned,
                ..member
            },
        );
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
            .values()
            .filter(|member| {
                let push = match positioned {
                    Some(positioned) if member.positioned => positioned,
                    _ => push,
                };
                member.connection.try_send_push(push).is_ok()
            })
            .count()
    }
}

impl MemoryGroups {
    /// The groups with at least one member.
    #[cfg(feature = "redis")]
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.read().members.keys().map(|g| g.to_string()).collect()
    }

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
        let was_member = members.remove(&id).is_some();
        if members.is_empty() {
            state.members.remove(group);
        }
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
                members.remove(&id);
                if members.is_empty() {
                    state.members.remove(&group);
                }
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
        self.read().members.get(group).map_or(0, HashMap::len)
    }

    fn stats(&self) -> GroupStats {
        let state = self.read();
        GroupStats {
            groups: state.members.len(),
            memberships: state.members.values().map(HashMap::len).sum(),
            connections: state.groups_of.len(),
        }
    }
}
