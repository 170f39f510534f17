//! Join and leave events: coalesced per group, then sent to the group's local watchers
//! (the subscribers whose group object said `"presence": true`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::store::Notice;
use super::Presence;
use crate::groups::{Policy, Push};
use crate::Connection;

/// The watchers of each group and the events waiting for their batch.
pub(crate) struct Events {
    interval: Duration,
    max: u64,
    state: Mutex<HashMap<Arc<str>, GroupEvents>>,
}

#[derive(Default)]
struct GroupEvents {
    watchers: HashMap<u64, Connection>,
    pending: Vec<Notice>,
    last_batch: Option<Instant>,
    scheduled: bool,
}

impl Events {
    pub(crate) fn new(presence: &Presence) -> Arc<Self> {
        Arc::new(Self {
            interval: presence.batch_interval(),
            max: presence.events_limit(),
            state: Mutex::default(),
        })
    }

    /// `connection` gets the events of `group` from now on.
    pub(crate) fn watch(&self, group: &str, connection: &Connection) {
        let mut state = crate::lock::lock(&self.state);
        let entry = match state.get_mut(group) {
            Some(entry) => entry,
            None => state.entry(Arc::from(group)).or_default(),
        };
        entry.watchers.insert(connection.id(), connection.clone());
    }

    /// `connection` no longer gets the events of `group`.
    pub(crate) fn unwatch(&self, group: &str, connection: &Connection) {
        let mut state = crate::lock::lock(&self.state);
        if let Some(entry) = state.get_mut(group) {
            entry.watchers.remove(&connection.id());
            if entry.watchers.is_empty() && !entry.scheduled {
                state.remove(group);
            }
        }
    }

    /// Sends `notice` to the watchers of `group` now, or with the group's next batch when
    /// one went out less than the interval ago.
    pub(crate) fn notify(self: &Arc<Self>, group: &str, notice: Notice) {
        // The group's size on the big side of the event: a leave from max + 1 to max is as
        // silent as the join that made it max + 1.
        let size = match notice.kind {
            super::store::Kind::Join => notice.members,
            super::store::Kind::Leave => notice.members + 1,
        };
        if size > self.max {
            return;
        }
        let mut state = crate::lock::lock(&self.state);
        let Some(entry) = state.get_mut(group) else {
            return; // nobody here watches it
        };
        let now = Instant::now();
        let due = entry.last_batch.map(|last| last + self.interval);
        if !entry.scheduled && due.map_or(true, |due| due <= now) {
            entry.last_batch = Some(now);
            send(group, &entry.watchers, &[notice]);
            return;
        }
        // A join and a leave of one member in one batch cancel out.
        if let Some(at) = entry
            .pending
            .iter()
            .position(|queued| queued.member == notice.member && queued.kind != notice.kind)
        {
            entry.pending.remove(at);
        } else {
            entry.pending.push(notice);
        }
        if entry.scheduled {
            return;
        }
        entry.scheduled = true;
        let due = due.unwrap_or(now);
        let group: Arc<str> = Arc::from(group);
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    this.flush(&group);
                });
            }
            Err(_) => {
                drop(state);
                self.flush(&group);
            }
        }
    }

    /// Sends a group's batch.
    fn flush(&self, group: &str) {
        let mut state = crate::lock::lock(&self.state);
        let Some(entry) = state.get_mut(group) else {
            return;
        };
        entry.scheduled = false;
        entry.last_batch = Some(Instant::now());
        let batch = std::mem::take(&mut entry.pending);
        send(group, &entry.watchers, &batch);
        if entry.watchers.is_empty() {
            state.remove(group);
        }
    }
}

/// Sends each event, serialized once, to every watcher.
fn send(group: &str, watchers: &HashMap<u64, Connection>, batch: &[Notice]) {
    if watchers.is_empty() {
        return;
    }
    for notice in batch {
        let push = Push::new(group, frame(group, notice), Policy::Disconnect);
        for watcher in watchers.values() {
            let _ = watcher.try_send_push(&push);
        }
    }
}

/// `{"id":…,"type":"subscription-update","data":{"type":"join","group":…,"object":…}}`.
pub(crate) fn frame(group: &str, notice: &Notice) -> Utf8Bytes {
    let id = crate::notify::next_push_id();
    let group = serde_json::Value::from(group);
    Utf8Bytes::from(format!(
        r#"{{"id":{id},"type":"subscription-update","data":{{"type":"{}","group":{group},"object":{}}}}}"#,
        notice.kind.as_str(),
        notice.object
    ))
}

#[cfg(test)]
mod tests {
    use super::super::store::Kind;
    use super::*;

    #[test]
    fn a_frame_has_the_documented_shape() {
        let notice = Notice {
            kind: Kind::Join,
            member: Arc::from("u7"),
            object: Arc::from(r#"{"id":"u7","info":{"user":"u7"}}"#),
            members: 1,
        };
        let frame = frame("todo-\"1", &notice);
        let (head, tail) = frame.as_str().split_once(',').unwrap();
        assert!(head.starts_with(r#"{"id":"#), "{frame}");
        assert_eq!(
            tail,
            r#""type":"subscription-update","data":{"type":"join","group":"todo-\"1","object":{"id":"u7","info":{"user":"u7"}}}}"#
        );
    }
}
