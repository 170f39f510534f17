//! The in-process group layer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures_util::future::BoxFuture;

use super::{GroupError, GroupLayer, GroupStats, Push};
use crate::Connection;

/// Groups of the connections of this process: the default [`GroupLayer`].
///
/// Sending takes a read lock and queues the shared frame for each member without waiting;
/// joining and leaving take a write lock.
#[derive(Default)]
pub struct MemoryGroups {
    state: RwLock<Memberships>,
}

#[derive(Default)]
struct Memberships {
    /// Group name → its members by connection id.
    members: HashMap<Arc<str>, HashMap<u64, Connection>>,
    /// Connection id → the groups it is in, so that leaving all is cheap.
    groups_of: HashMap<u64, HashSet<Arc<str>>>,
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
        let mut state = self.write();
        let name: Arc<str> = match state.members.get_key_value(group) {
            Some((name, _)) => name.clone(),
            None => Arc::from(group),
        };
        state
            .members
            .entry(name.clone())
            .or_default()
            .insert(connection.id(), connection.clone());
        state
            .groups_of
            .entry(connection.id())
            .or_default()
            .insert(name);
    }

    /// The groups with at least one member.
    #[cfg(feature = "redis")]
    pub(crate) fn group_names(&self) -> Vec<String> {
        self.read().members.keys().map(|g| g.to_string()).collect()
    }

    /// Queues `push` for every local member of `group`.
    pub(crate) fn deliver(&self, group: &str, push: &Push) -> usize {
        let state = self.read();
        let Some(members) = state.members.get(group) else {
            return 0;
        };
        members
            .values()
            .filter(|member| member.try_send_push(push).is_ok())
            .count()
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
