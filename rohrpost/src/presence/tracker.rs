//! This node's side of presence: which connection counts as which member of which group,
//! and the grace of members whose last connection closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::store::{EventSink, PresenceStore};
use super::{object_json, Events, IdentifyFn, InfoFn, Presence};
use crate::Connection;

/// Presence as configured on a server's groups.
pub(crate) struct Tracker {
    presence: Presence,
    identify: Option<IdentifyFn>,
    info: Option<InfoFn>,
    store: Arc<dyn PresenceStore>,
    events: Arc<Events>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Group → member → this node's part of it.
    groups: HashMap<Arc<str>, HashMap<Arc<str>, Local>>,
    /// Connection id → the groups it counts in, and as which member.
    connections: HashMap<u64, HashMap<Arc<str>, Arc<str>>>,
    /// Connection id → the groups whose events it gets.
    watching: HashMap<u64, Vec<Arc<str>>>,
    /// Tells a member's grace timers apart.
    next_grace: u64,
}

/// One member of one group on this node.
struct Local {
    connections: u64,
    object: Arc<str>,
    /// The grace timer running for it (0: none).
    grace: u64,
}

impl Tracker {
    /// Presence over the store a group layer gives (`None`: this process's own).
    pub(crate) fn new(
        presence: Presence,
        identify: Option<IdentifyFn>,
        info: Option<InfoFn>,
        store: impl FnOnce(EventSink) -> Option<Arc<dyn PresenceStore>>,
    ) -> Arc<Self> {
        let events = Events::new(&presence);
        let into = events.clone();
        let sink: EventSink = Arc::new(move |group, notice| into.notify(group, notice));
        let store =
            store(sink.clone()).unwrap_or_else(|| Arc::new(super::store::MemoryStore::new(sink)));
        Arc::new(Self {
            presence,
            identify,
            info,
            store,
            events,
            state: Mutex::default(),
        })
    }

    pub(crate) fn presence(&self) -> &Presence {
        &self.presence
    }

    pub(crate) fn store(&self) -> &dyn PresenceStore {
        &*self.store
    }

    /// `connection` joined `group`: it counts as its member from now on.
    pub(crate) fn joined(&self, group: &str, connection: &Connection) {
        if !self.presence.covers(group) {
            return;
        }
        let member: Arc<str> = match &self.identify {
            Some(identify) => Arc::from(identify(connection)),
            None => Arc::from(connection.id().to_string()),
        };
        let info = self
            .info
            .as_ref()
            .map_or(Value::Null, |info| info(connection));
        let object = object_json(&member, &info);
        let mut state = crate::lock::lock(&self.state);
        let counted = state.connections.entry(connection.id()).or_default();
        if counted.contains_key(group) {
            return; // joining twice is one membership
        }
        let group: Arc<str> = match state.groups.get_key_value(group) {
            Some((name, _)) => name.clone(),
            None => Arc::from(group),
        };
        state
            .connections
            .entry(connection.id())
            .or_default()
            .insert(group.clone(), member.clone());
        let local = state
            .groups
            .entry(group.clone())
            .or_default()
            .entry(member.clone())
            .or_insert_with(|| Local {
                connections: 0,
                object: object.clone(),
                grace: 0,
            });
        local.connections += 1;
        local.grace = 0; // back within the grace: no leave, no join
        local.object = object.clone();
        // Under the lock: the store sees this node's changes in their order.
        self.store.change(&group, &member, &object, 1, false);
    }

    /// `connection` left `group`: at once, or after the grace when it `disconnected`.
    pub(crate) fn left(self: &Arc<Self>, group: &str, connection: &Connection, disconnected: bool) {
        let mut state = crate::lock::lock(&self.state);
        // Also a watcher that never counted (its join failed or raced with this leave).
        state.unwatch(&self.events, group, connection);
        let Some(counted) = state.connections.get_mut(&connection.id()) else {
            return;
        };
        let Some(member) = counted.remove(group) else {
            return;
        };
        if counted.is_empty() {
            state.connections.remove(&connection.id());
        }
        let grace = self.presence.grace_time();
        let runtime = tokio::runtime::Handle::try_current().ok();
        state.next_grace += 1;
        let timer = state.next_grace;
        let Some(members) = state.groups.get_mut(group) else {
            return;
        };
        let Some(local) = members.get_mut(&member) else {
            return;
        };
        local.connections = local.connections.saturating_sub(1);
        let object = local.object.clone();
        if local.connections > 0 {
            self.store.change(group, &member, &object, -1, false);
            return;
        }
        let runtime = match runtime {
            Some(runtime) if disconnected && !grace.is_zero() => runtime,
            _ => {
                members.remove(&member);
                if members.is_empty() {
                    state.groups.remove(group);
                }
                self.store.change(group, &member, &object, -1, true);
                return;
            }
        };
        local.grace = timer;
        self.store.change(group, &member, &object, -1, false);
        let this = self.clone();
        let group: Arc<str> = Arc::from(group);
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            this.grace_over(&group, &member, timer);
        });
    }

    /// A disconnected member's grace is over: it leaves unless it came back.
    fn grace_over(&self, group: &str, member: &Arc<str>, timer: u64) {
        let mut state = crate::lock::lock(&self.state);
        let Some(members) = state.groups.get_mut(group) else {
            return;
        };
        let Some(local) = members.get(member) else {
            return;
        };
        if local.connections > 0 || local.grace != timer {
            return;
        }
        let object = local.object.clone();
        members.remove(member);
        if members.is_empty() {
            state.groups.remove(group);
        }
        self.store.change(group, member, &object, 0, true);
    }

    /// `connection` left every group at once (`leave_all`), or closed (`disconnected`).
    pub(crate) fn left_all(self: &Arc<Self>, connection: &Connection, disconnected: bool) {
        let groups: Vec<Arc<str>> = crate::lock::lock(&self.state)
            .connections
            .get(&connection.id())
            .map(|counted| counted.keys().cloned().collect())
            .unwrap_or_default();
        for group in groups {
            self.left(&group, connection, disconnected);
        }
        // Groups it watched without counting in them (a join that failed).
        let mut state = crate::lock::lock(&self.state);
        for group in state.watching.remove(&connection.id()).unwrap_or_default() {
            self.events.unwatch(&group, connection);
        }
    }

    /// `connection` gets the join and leave events of `group`.
    pub(crate) fn watch(&self, group: &str, connection: &Connection) {
        let mut state = crate::lock::lock(&self.state);
        let watching = state.watching.entry(connection.id()).or_default();
        if !watching.iter().any(|watched| &**watched == group) {
            watching.push(Arc::from(group));
            self.events.watch(group, connection);
        }
    }

    /// `connection` no longer gets the events of `group`.
    pub(crate) fn unwatch(&self, group: &str, connection: &Connection) {
        crate::lock::lock(&self.state).unwatch(&self.events, group, connection);
    }
}

impl State {
    fn unwatch(&mut self, events: &Events, group: &str, connection: &Connection) {
        let Some(watching) = self.watching.get_mut(&connection.id()) else {
            return;
        };
        let before = watching.len();
        watching.retain(|watched| &**watched != group);
        if watching.len() != before {
            events.unwatch(group, connection);
        }
        if watching.is_empty() {
            self.watching.remove(&connection.id());
        }
    }
}
