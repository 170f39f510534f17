//! Where a group's members are counted: in this process (`MemoryStore`), or in Redis for
//! every node. Not a public API: group layers provide it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::{member_from_object, PresenceCount, PresenceSnapshot};
use crate::groups::GroupError;

/// A member came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Its first connection in the group.
    Join,
    /// After its last connection (and the grace of a disconnect).
    Leave,
}

impl Kind {
    /// `"join"` or `"leave"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Leave => "leave",
        }
    }
}

/// One event of one group, as a store reports it.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Join or leave.
    pub kind: Kind,
    /// The member's presence id.
    pub member: Arc<str>,
    /// `{"id": …, "info": …}` as JSON text.
    pub object: Arc<str>,
    /// The group's members after it.
    pub members: u64,
}

/// Where a store reports the events of a group.
pub type EventSink = Arc<dyn Fn(&str, Notice) + Send + Sync>;

/// Counts the members of groups. `change` must not wait: a store that talks to a server
/// queues the change and reports the events it causes when they happen.
pub trait PresenceStore: Send + Sync + 'static {
    /// This node's connections of `member` in `group` change by `delta` (its object is
    /// `object`); with `drop`, the member leaves this node if it has no connection left.
    fn change(&self, group: &str, member: &Arc<str>, object: &Arc<str>, delta: i64, drop: bool);

    /// Who is in `group`; the list only when `list`.
    fn snapshot<'a>(
        &'a self,
        group: &'a str,
        list: bool,
    ) -> BoxFuture<'a, Result<PresenceSnapshot, GroupError>>;

    /// How many are in `group`.
    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceCount, GroupError>>;
}

/// The members of this process's groups.
pub(crate) struct MemoryStore {
    groups: Mutex<HashMap<String, GroupMembers>>,
    sink: EventSink,
}

#[derive(Default)]
struct GroupMembers {
    /// Presence id → its connections and object.
    members: HashMap<Arc<str>, (u64, Arc<str>)>,
    connections: u64,
}

impl MemoryStore {
    pub(crate) fn new(sink: EventSink) -> Self {
        Self {
            groups: Mutex::default(),
            sink,
        }
    }
}

impl PresenceStore for MemoryStore {
    fn change(&self, group: &str, member: &Arc<str>, object: &Arc<str>, delta: i64, drop: bool) {
        let mut groups = crate::lock::lock(&self.groups);
        let mut notices = Vec::new();
        if delta > 0 {
            let entry = groups.entry(group.to_owned()).or_default();
            entry.connections += delta.unsigned_abs();
            match entry.members.get_mut(member) {
                Some((connections, stored)) => {
                    *connections += delta.unsigned_abs();
                    *stored = object.clone();
                }
                None => {
                    entry
                        .members
                        .insert(member.clone(), (delta.unsigned_abs(), object.clone()));
                    notices.push(Notice {
                        kind: Kind::Join,
                        member: member.clone(),
                        object: object.clone(),
                        members: entry.members.len() as u64,
                    });
                }
            }
        }
        if let Some(entry) = groups.get_mut(group) {
            if delta < 0 {
                if let Some((connections, _)) = entry.members.get_mut(member) {
                    let taken = delta.unsigned_abs().min(*connections);
                    *connections -= taken;
                    entry.connections -= taken;
                }
            }
            if drop && entry.members.get(member).is_some_and(|(c, _)| *c == 0) {
                if let Some((_, stored)) = entry.members.remove(member) {
                    notices.push(Notice {
                        kind: Kind::Leave,
                        member: member.clone(),
                        object: stored,
                        members: entry.members.len() as u64,
                    });
                }
            }
            if entry.members.is_empty() {
                groups.remove(group);
            }
        }
        drop_lock_then_report(groups, group, notices, &self.sink);
    }

    fn snapshot<'a>(
        &'a self,
        group: &'a str,
        list: bool,
    ) -> BoxFuture<'a, Result<PresenceSnapshot, GroupError>> {
        let groups = crate::lock::lock(&self.groups);
        let snapshot = match groups.get(group) {
            Some(entry) => PresenceSnapshot {
                group: group.to_owned(),
                connections: entry.connections,
                members: entry.members.len() as u64,
                list: list.then(|| {
                    entry
                        .members
                        .values()
                        .filter_map(|(connections, object)| {
                            member_from_object(object, *connections)
                        })
                        .collect()
                }),
            },
            None => PresenceSnapshot {
                group: group.to_owned(),
                connections: 0,
                members: 0,
                list: list.then(Vec::new),
            },
        };
        Box::pin(async move { Ok(snapshot) })
    }

    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceCount, GroupError>> {
        let count = crate::lock::lock(&self.groups)
            .get(group)
            .map(|entry| PresenceCount {
                connections: entry.connections,
                members: entry.members.len() as u64,
            })
            .unwrap_or_default();
        Box::pin(async move { Ok(count) })
    }
}

/// Reports events after the store's lock is released, in their order.
fn drop_lock_then_report<T>(
    guard: std::sync::MutexGuard<'_, T>,
    group: &str,
    notices: Vec<Notice>,
    sink: &EventSink,
) {
    drop(guard);
    for notice in notices {
        sink(group, notice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Seen = Arc<Mutex<Vec<(Kind, String, u64)>>>;

    fn recorded() -> (EventSink, Seen) {
        let seen: Seen = Arc::default();
        let into = seen.clone();
        let sink: EventSink = Arc::new(move |_group, notice: Notice| {
            into.lock()
                .unwrap()
                .push((notice.kind, notice.member.to_string(), notice.members));
        });
        (sink, seen)
    }

    #[test]
    fn joins_on_the_first_connection_and_leaves_on_the_drop_after_the_last() {
        let (sink, seen) = recorded();
        let store = MemoryStore::new(sink);
        let (u7, object): (Arc<str>, Arc<str>) = (Arc::from("u7"), Arc::from(r#"{"id":"u7"}"#));
        store.change("g", &u7, &object, 1, false);
        store.change("g", &u7, &object, 1, false);
        store.change("g", &u7, &object, -1, true);
        assert_eq!(seen.lock().unwrap().len(), 1, "one join, no leave yet");
        store.change("g", &u7, &object, -1, false);
        assert_eq!(seen.lock().unwrap().len(), 1, "in grace: still present");
        store.change("g", &u7, &object, 0, true);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (Kind::Join, "u7".to_owned(), 1),
                (Kind::Leave, "u7".to_owned(), 0)
            ]
        );
        assert!(
            store.groups.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }
}
