//! Presence: who is in a group, on every node, and when they come and go.
//!
//! Turn it on for chosen groups with
//! [`ServerBuilder::presence`](crate::server::ServerBuilder::presence). Each connection has
//! a presence id ([`ServerBuilder::presence_id`](crate::server::ServerBuilder::presence_id),
//! for example the user id the authentication hook stored; by default the connection's own
//! id) and info ([`ServerBuilder::presence_info`](crate::server::ServerBuilder::presence_info),
//! a display name, say). Several connections with one presence id are one member.
//!
//! # On the server
//!
//! [`Groups::presence`](crate::Groups::presence) lists the connections, the distinct members
//! and each member with its info and connection count;
//! [`Groups::presence_count`](crate::Groups::presence_count) gives the two counts only. With
//! `RedisGroups` (the `redis` feature) both answer for every node.
//!
//! # On the wire (usable from an unmodified rohrpost.js)
//!
//! With [`Subscriptions::with_presence`](crate::subscribe::Subscriptions::with_presence), a
//! `presence` request, authorized by the same hook as `subscribe` (`ACCESS_DENIED` when
//! refused), answers:
//!
//! ```text
//! → {"id":5,"type":"presence","auth_jwt":"…","data":{"type":"todo","id":1}}
//! ← {"id":5,"type":"presence","data":{"group":"todo-1","connections":3,"members":2,"list":[{"id":"u7","info":{"user":"u7"},"connections":2},…]}}
//! ```
//!
//! `"list": false` in the request's data leaves `list` out. A subscriber whose group object
//! says `"presence": true` gets, as ordinary pushes to the group's listeners:
//!
//! ```text
//! ← {"id":…,"type":"subscription-update","data":{"type":"join","group":"todo-1","object":{"id":"u7","info":{"user":"u7"}}}}
//! ← {"id":…,"type":"subscription-update","data":{"type":"leave","group":"todo-1","object":{"id":"u7","info":{"user":"u7"}}}}
//! ```
//!
//! A join goes out on a member's first connection in the group, a leave after its last.
//! Nobody who did not ask sees `join` or `leave`.
//!
//! # Leaves without flapping
//!
//! A leave caused by `unsubscribe` or [`Connection::leave`](crate::Connection::leave) goes
//! out at once. One caused by a disconnect waits [`Presence::grace`] (15 s by default) and
//! is cancelled when the same member comes back meanwhile: a page reload is no leave and
//! join. Until then the member is still listed, with the connections it has left (maybe 0).
//!
//! # Scale
//!
//! The events of one group are coalesced: the first goes out at once, later ones at most
//! once per [`Presence::interval`], and a join and leave of the same member within one
//! batch cancel out. Above [`Presence::events_max`] members a group sends no events at all
//! (counts and queries keep working): a client that needs the list then asks for it.
//!
//! # Across nodes
//!
//! With `RedisGroups` (the `redis` feature), each group's members live in Redis
//! hashes with per-node connection counts, written by one script per batch of changes. Each
//! node refreshes one liveness key every third of [`Presence::node_ttl`]; when a node stops
//! (crash, SIGKILL, network), another one finds its key expired and removes its members, so
//! their leaves go out within `node_ttl` (plus a third) of its end. A live node removes at most
//! 256 groups of dead nodes per beat; a node that was in more groups is removed over the
//! following beats.

mod events;
#[doc(hidden)]
pub mod store;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Connection;

pub(crate) use events::Events;
pub(crate) use tracker::Tracker;

/// The default time a disconnected member stays present, in case it comes back.
pub const DEFAULT_PRESENCE_GRACE: Duration = Duration::from_secs(15);
/// The default number of members above which a group sends no join or leave events.
pub const DEFAULT_PRESENCE_EVENTS_MAX: u64 = 1_000;
/// The default shortest time between two batches of one group's events.
pub const DEFAULT_PRESENCE_INTERVAL: Duration = Duration::from_millis(50);
/// The default time after which a node that stopped refreshing its liveness key is
/// taken for dead and its members removed (Redis layer).
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(15);

/// Which groups keep presence, and how it behaves.
///
/// ```
/// use std::time::Duration;
/// use rohrpost::presence::Presence;
///
/// let presence = Presence::groups(["todo-*"])
///     .grace(Duration::from_secs(15))
///     .events_max(1_000)
///     .node_ttl(Duration::from_secs(15));
/// assert!(presence.covers("todo-1"));
/// assert!(!presence.covers("todos-all"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    patterns: crate::groups::GroupPatterns,
    grace: Duration,
    events_max: u64,
    interval: Duration,
    node_ttl: Duration,
}

impl Presence {
    /// Presence in the groups whose names match one of `patterns`, where `*` stands for any
    /// text (`"todo-*"`, `"*"`), with the default settings.
    pub fn groups<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            patterns: crate::groups::GroupPatterns::new(patterns),
            grace: DEFAULT_PRESENCE_GRACE,
            events_max: DEFAULT_PRESENCE_EVENTS_MAX,
            interval: DEFAULT_PRESENCE_INTERVAL,
            node_ttl: DEFAULT_NODE_TTL,
        }
    }

    /// How long a member whose last connection closed stays present (default 15 s); coming
    /// back meanwhile cancels its leave.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Above this many members a group sends no join or leave events (default 1,000).
    pub fn events_max(mut self, members: u64) -> Self {
        self.events_max = members;
        self
    }

    /// The shortest time between two batches of one group's events (default 50 ms).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// With Redis: how long a node may go without refreshing its liveness key before the
    /// others take it for dead (default 15 s, at least 300 ms: shorter is taken as 300 ms);
    /// it refreshes every third of that.
    pub fn node_ttl(mut self, ttl: Duration) -> Self {
        self.node_ttl = ttl;
        self
    }

    /// Whether `group` keeps presence.
    pub fn covers(&self, group: &str) -> bool {
        self.patterns.covers(group)
    }

    /// The grace of a disconnected member.
    pub fn grace_time(&self) -> Duration {
        self.grace
    }

    /// The liveness key's lifetime.
    pub fn node_ttl_time(&self) -> Duration {
        self.node_ttl
    }

    pub(crate) fn events_limit(&self) -> u64 {
        self.events_max
    }

    pub(crate) fn batch_interval(&self) -> Duration {
        self.interval
    }
}

/// Who is in a group: the reply of a `presence` request, and of
/// [`Groups::presence`](crate::Groups::presence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PresenceSnapshot {
    /// The group.
    pub group: String,
    /// Its connections, on every node.
    pub connections: u64,
    /// Its distinct members (presence ids).
    pub members: u64,
    /// Each member, in no particular order; left out when the request said `"list": false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<PresenceMember>>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PresenceMember {
    /// Its presence id.
    pub id: String,
    /// What [`ServerBuilder::presence_info`](crate::server::ServerBuilder::presence_info)
    /// gave for its latest connection (`null` without it).
    pub info: Value,
    /// How many connections it has in the group (0 while a disconnect's grace runs).
    pub connections: u64,
}

/// How many are in a group: [`Groups::presence_count`](crate::Groups::presence_count).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceCount {
    /// Its connections, on every node.
    pub connections: u64,
    /// Its distinct members.
    pub members: u64,
}

/// The presence id of a connection.
pub(crate) type IdentifyFn = Arc<dyn Fn(&Connection) -> String + Send + Sync>;
/// The presence info of a connection.
pub(crate) type InfoFn = Arc<dyn Fn(&Connection) -> Value + Send + Sync>;

/// How a connection is known to presence: the builder's `presence_id` and `presence_info`.
#[derive(Clone, Default)]
pub(crate) struct Identity {
    pub(crate) id: Option<IdentifyFn>,
    pub(crate) info: Option<InfoFn>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.as_ref().map(|_| "Fn"))
            .field("info", &self.info.as_ref().map(|_| "Fn"))
            .finish()
    }
}

/// The object of a join or leave: `{"id": …, "info": …}` as JSON text.
pub(crate) fn object_json(id: &str, info: &Value) -> Arc<str> {
    #[derive(Serialize)]
    struct Object<'a> {
        id: &'a str,
        info: &'a Value,
    }
    let text = serde_json::to_string(&Object { id, info })
        .unwrap_or_else(|_| format!("{{\"id\":{},\"info\":null}}", Value::from(id)));
    Arc::from(text)
}

/// A member as stored: its object's JSON and its connection count.
pub(crate) fn member_from_object(object: &str, connections: u64) -> Option<PresenceMember> {
    #[derive(Deserialize)]
    struct Object {
        id: String,
        #[serde(default)]
        info: Value,
    }
    let object: Object = serde_json::from_str(object).ok()?;
    Some(PresenceMember {
        id: object.id,
        info: object.info,
        connections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_snapshot_serializes_in_the_documented_order() {
        let snapshot = PresenceSnapshot {
            group: "todo-1".into(),
            connections: 3,
            members: 2,
            list: Some(vec![PresenceMember {
                id: "u7".into(),
                info: json!({"user": "u7"}),
                connections: 2,
            }]),
        };
        assert_eq!(
            serde_json::to_string(&snapshot).unwrap(),
            r#"{"group":"todo-1","connections":3,"members":2,"list":[{"id":"u7","info":{"user":"u7"},"connections":2}]}"#
        );
        let counted = PresenceSnapshot {
            list: None,
            ..snapshot
        };
        assert_eq!(
            serde_json::to_string(&counted).unwrap(),
            r#"{"group":"todo-1","connections":3,"members":2}"#
        );
    }

    #[test]
    fn objects_round_trip() {
        let object = object_json("u\"7", &json!({"user": "ada"}));
        assert_eq!(&*object, r#"{"id":"u\"7","info":{"user":"ada"}}"#);
        let member = member_from_object(&object, 2).unwrap();
        assert_eq!(member.id, "u\"7");
        assert_eq!(member.info, json!({"user": "ada"}));
        assert_eq!(member.connections, 2);
    }
}
