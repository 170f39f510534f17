//! Presence across nodes: each group's members in Redis hashes with per-node connection
//! counts, changed by scripts, and one liveness key per node.
//!
//! Keys of group `g` (hash-tagged, like the history's):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}{g}:pn:<node>` | hash | member → that node's connections (0: in its grace) |
//! | `{prefix}{g}:pnodes` | set | the nodes with a `pn` hash |
//! | `{prefix}{g}:pm` | hash | member → connections on every node |
//! | `{prefix}{g}:pi` | hash | member → `{"id", "info"}` |
//! | `{prefix}{g}:pc` | string | the group's connections |
//!
//! and per node `{prefix}node:<node>` (its liveness, `node_ttl`), `{prefix}node:<node>:groups`
//! (the groups it has members in), and `{prefix}presence-nodes` (every node with presence).
//! A script that makes a member join or leave the group publishes the event on the group's
//! channel as `P` then, per event, `j` or `l`, the members after it, `:`, the member's
//! length, `:`, the member, the object's length, `:` and the object.
//!
//! The scripts read other nodes' `pn` hashes of the same group, which share its hash tag;
//! the node keys do not, so presence needs a Redis that is not a Cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::Script;
use tokio::sync::Notify;

use super::backend;
use crate::groups::GroupError;
use crate::presence::store::{EventSink, Kind, Notice, PresenceStore};
use crate::presence::{member_from_object, Presence, PresenceCount, PresenceSnapshot};

/// The scripts' shared first lines. KEYS: pnodes, this node's pn, pm, pi, pc, the node's
/// group set. ARGV: node, channel, the pn keys' prefix, group, then the script's own.
macro_rules! prelude {
    () => {
        r"
local node, channel, pnprefix, group = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local out = {}
local function others_hold(member)
  for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if n ~= node and redis.call('HEXISTS', pnprefix .. n, member) == 1 then return true end
  end
  return false
end
local function event(kind, member, object)
  local n = redis.call('HLEN', KEYS[3])
  out[#out + 1] = kind .. n .. ':' .. #member .. ':' .. member .. #object .. ':' .. object
end
local function gone(member)
  if others_hold(member) then return end
  local object = redis.call('HGET', KEYS[4], member)
  redis.call('HDEL', KEYS[4], member)
  if redis.call('HDEL', KEYS[3], member) == 1 and object then event('l', member, object) end
end
local function settle()
  if redis.call('HLEN', KEYS[3]) == 0 then redis.call('DEL', KEYS[5]) end
  if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('SADD', KEYS[1], node)
    redis.call('SADD', KEYS[6], group)
  else
    redis.call('SREM', KEYS[1], node)
    redis.call('SREM', KEYS[6], group)
  end
  if #out > 0 then redis.call('PUBLISH', channel, 'P' .. table.concat(out)) end
  return #out
end
"
    };
}

/// Applies a batch of one node's changes: ARGV from 5 on, per change, member, object,
/// connections delta, `1` to drop the member from the node when it has none left.
const CHANGE: &str = concat!(
    prelude!(),
    r"
redis.call('SADD', KEYS[1], node)
for i = 5, #ARGV, 4 do
  local member, object, delta = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if delta > 0 then
    local was = redis.call('HEXISTS', KEYS[3], member)
    redis.call('HINCRBY', KEYS[2], member, delta)
    redis.call('HINCRBY', KEYS[3], member, delta)
    redis.call('INCRBY', KEYS[5], delta)
    redis.call('HSET', KEYS[4], member, object)
    if was == 0 then event('j', member, object) end
  elseif delta < 0 and redis.call('HEXISTS', KEYS[2], member) == 1 then
    redis.call('HINCRBY', KEYS[2], member, delta)
    redis.call('HINCRBY', KEYS[3], member, delta)
    redis.call('INCRBY', KEYS[5], delta)
  end
  if ARGV[i + 3] == '1' and redis.call('HGET', KEYS[2], member) == '0' then
    redis.call('HDEL', KEYS[2], member)
    gone(member)
  end
end
return settle()
"
);

/// Makes a node's part of a group exactly what it says: ARGV from 5 on, per member,
/// member, object, connections.
const RESET: &str = concat!(
    prelude!(),
    r"
local want = {}
for i = 5, #ARGV, 3 do want[ARGV[i]] = {ARGV[i + 1], tonumber(ARGV[i + 2])} end
local have = redis.call('HGETALL', KEYS[2])
for i = 1, #have, 2 do
  local member, count = have[i], tonumber(have[i + 1])
  local wanted = want[member]
  if wanted then
    local delta = wanted[2] - count
    redis.call('HINCRBY', KEYS[2], member, delta)
    redis.call('HINCRBY', KEYS[3], member, delta)
    redis.call('INCRBY', KEYS[5], delta)
    redis.call('HSET', KEYS[4], member, wanted[1])
    want[member] = nil
  else
    redis.call('HDEL', KEYS[2], member)
    redis.call('HINCRBY', KEYS[3], member, -count)
    redis.call('INCRBY', KEYS[5], -count)
    gone(member)
  end
end
for member, wanted in pairs(want) do
  local was = redis.call('HEXISTS', KEYS[3], member)
  redis.call('HSET', KEYS[2], member, wanted[2])
  redis.call('HINCRBY', KEYS[3], member, wanted[2])
  redis.call('INCRBY', KEYS[5], wanted[2])
  redis.call('HSET', KEYS[4], member, wanted[1])
  if was == 0 then event('j', member, wanted[1]) end
end
return settle()
"
);

/// Removes a dead node's part of a group, unless its liveness key (KEYS[7]) is back.
const GONE: &str = concat!(
    prelude!(),
    r"
if redis.call('EXISTS', KEYS[7]) == 1 then return -1 end
local have = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
for i = 1, #have, 2 do
  local member, count = have[i], tonumber(have[i + 1])
  redis.call('HINCRBY', KEYS[3], member, -count)
  redis.call('INCRBY', KEYS[5], -count)
  gone(member)
end
return settle()
"
);

/// Forgets a dead node that has no group left, unless its liveness key is back. KEYS: the
/// node's liveness key, its group set, the set of nodes. ARGV: the node.
const FORGET: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 1
";

/// The shortest liveness a node's key gets, whatever `Presence::node_ttl` says: a refresh
/// every 100 ms at most.
pub(crate) const MIN_NODE_TTL: Duration = Duration::from_millis(300);

/// The most changes one script call applies.
const BATCH: usize = 1_000;
/// The most groups of dead nodes one heartbeat cleans: the rest wait for the next, so that a
/// node with many groups that dies does not hold the sweepers' own refreshes back.
const SWEEP_GROUPS: usize = 256;

/// Presence in Redis, for one node.
pub(super) struct RedisPresence {
    inner: Arc<Inner>,
}

struct Inner {
    prefix: String,
    node: String,
    connection: ConnectionManager,
    timeout: Duration,
    node_ttl: Duration,
    local: Mutex<Local>,
    wake: Notify,
    change: Script,
    reset: Script,
    gone: Script,
    forget: Script,
}

/// This node's part, and the changes not yet written, under one lock: a rewrite takes
/// both at once, so no change is written twice or lost between them.
#[derive(Default)]
struct Local {
    /// Group → member → its connections here and its object.
    members: HashMap<String, Part>,
    queue: Vec<Change>,
    /// A write failed, or Redis lost this node: write the whole part again.
    dirty: bool,
}

/// A node's members of one group: member → its connections here and its object.
type Part = HashMap<Arc<str>, (i64, Arc<str>)>;

struct Change {
    group: String,
    member: Arc<str>,
    object: Arc<str>,
    delta: i64,
    drop: bool,
}

impl RedisPresence {
    /// Starts this node's presence: its writer, liveness and sweeping task.
    pub(super) fn start(
        prefix: &str,
        node: &str,
        connection: ConnectionManager,
        timeout: Duration,
        presence: &Presence,
    ) -> Self {
        let inner = Arc::new(Inner {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            connection,
            timeout,
            node_ttl: presence.node_ttl_time().max(MIN_NODE_TTL),
            local: Mutex::new(Local {
                dirty: true,
                ..Local::default()
            }),
            wake: Notify::new(),
            change: Script::new(CHANGE),
            reset: Script::new(RESET),
            gone: Script::new(GONE),
            forget: Script::new(FORGET),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(run(Arc::downgrade(&inner)));
            }
            Err(_) => tracing::error!("presence needs a Tokio runtime: start the server in one"),
        }
        Self { inner }
    }
}

/// Writes changes as they come; refreshes the liveness key and sweeps dead nodes every
/// third of `node_ttl`.
async fn run(inner: Weak<Inner>) {
    let beat = match inner.upgrade() {
        Some(inner) => (inner.node_ttl / 3).max(Duration::from_millis(100)),
        None => return,
    };
    let mut ticks = tokio::time::interval(beat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        tokio::select! {
            _ = strong.wake.notified() => strong.write().await,
            _ = ticks.tick() => strong.heartbeat().await,
        }
    }
}

impl Inner {
    fn group_keys(&self, group: &str, node: &str) -> [String; 7] {
        let base = format!("{}{{{group}}}:", self.prefix);
        [
            format!("{base}pnodes"),
            format!("{base}pn:{node}"),
            format!("{base}pm"),
            format!("{base}pi"),
            format!("{base}pc"),
            self.node_groups_key(node),
            self.alive_key(node),
        ]
    }

    fn alive_key(&self, node: &str) -> String {
        format!("{}node:{node}", self.prefix)
    }

    fn node_groups_key(&self, node: &str) -> String {
        format!("{}node:{node}:groups", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}presence-nodes", self.prefix)
    }

    fn channel(&self, group: &str) -> String {
        format!("{}{group}", self.prefix)
    }

    /// A script call on `group` for `node`, with the shared arguments.
    fn invocation<'a>(
        &self,
        script: &'a Script,
        group: &str,
        node: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in self.group_keys(group, node) {
            invocation.key(key);
        }
        invocation
            .arg(node)
            .arg(self.channel(group))
            .arg(format!("{}{{{group}}}:pn:", self.prefix))
            .arg(group);
        invocation
    }

    async fn call(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<i64, GroupError> {
        let mut connection = self.connection.clone();
        match tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection)).await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(error)) => Err(backend(error)),
            Err(_) => Err(GroupError::Backend(
                format!("Redis did not answer within {:?}", self.timeout).into(),
            )),
        }
    }

    /// Writes the queued changes, one script call per group (and per `BATCH` changes).
    async fn write(&self) {
        let queue = std::mem::take(&mut crate::lock::lock(&self.local).queue);
        // Each group's changes in their order; the groups in any order.
        let mut by_group: HashMap<String, Vec<Change>> = HashMap::new();
        for change in queue {
            by_group
                .entry(change.group.clone())
                .or_default()
                .push(change);
        }
        for (group, changes) in by_group {
            for batch in changes.chunks(BATCH) {
                let mut invocation = self.invocation(&self.change, &group, &self.node);
                for change in batch {
                    invocation
                        .arg(&*change.member)
                        .arg(&*change.object)
                        .arg(change.delta)
                        .arg(if change.drop { "1" } else { "0" });
                }
                if let Err(error) = self.call(&invocation).await {
                    tracing::warn!(group, %error, "could not write presence to Redis; writing it again when Redis answers");
                    crate::lock::lock(&self.local).dirty = true;
                }
            }
        }
    }

    /// Refreshes the liveness key (rewriting this node's part when Redis lost it or a
    /// write failed), then removes the nodes whose key expired.
    async fn heartbeat(&self) {
        if let Err(error) = self.stay_alive().await {
            tracing::warn!(%error, "could not refresh this node's presence in Redis");
            crate::lock::lock(&self.local).dirty = true;
            return;
        }
        if let Err(error) = self.sweep().await {
            tracing::warn!(%error, "could not remove the presence of stopped nodes");
        }
    }

    async fn stay_alive(&self) -> Result<(), GroupError> {
        let mut connection = self.connection.clone();
        let ttl = u64::try_from(self.node_ttl.as_millis()).unwrap_or(u64::MAX);
        // Registered again at every beat (idempotent): a node that a sweeper forgot while it
        // came back heals itself.
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.alive_key(&self.node))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .arg("XX")
            .sadd(self.nodes_key(), &self.node)
            .ignore();
        let (refreshed,): (Option<String>,) =
            self.bounded(pipe.query_async(&mut connection)).await?;
        if refreshed.is_none() {
            // New, or taken for dead (Redis restarted, or unreachable for node_ttl).
            let mut set = redis::cmd("SET");
            set.arg(self.alive_key(&self.node))
                .arg(1)
                .arg("PX")
                .arg(ttl);
            self.bounded(set.query_async::<()>(&mut connection)).await?;
            crate::lock::lock(&self.local).dirty = true;
        }
        if std::mem::take(&mut crate::lock::lock(&self.local).dirty) {
            if let Err(error) = self.rewrite().await {
                crate::lock::lock(&self.local).dirty = true;
                return Err(error);
            }
        }
        Ok(())
    }

    /// Writes this node's whole part again: every group it has members in now, and every
    /// group Redis still lists for it.
    async fn rewrite(&self) -> Result<(), GroupError> {
        let members = {
            let mut local = crate::lock::lock(&self.local);
            local.queue.clear(); // the part below includes them
            local.members.clone()
        };
        let mut connection = self.connection.clone();
        let listed: Vec<String> = self
            .bounded(
                redis::cmd("SMEMBERS")
                    .arg(self.node_groups_key(&self.node))
                    .query_async(&mut connection),
            )
            .await?;
        let empty = HashMap::new();
        let groups = members.keys().cloned().chain(
            listed
                .into_iter()
                .filter(|group| !members.contains_key(group)),
        );
        for group in groups.collect::<Vec<_>>() {
            let part = members.get(&group).unwrap_or(&empty);
            let mut invocation = self.invocation(&self.reset, &group, &self.node);
            for (member, (connections, object)) in part {
                invocation.arg(&**member).arg(&**object).arg(*connections);
            }
            self.call(&invocation).await?;
        }
        tracing::debug!(
            groups = members.len(),
            "wrote this node's presence to Redis"
        );
        Ok(())
    }

    /// Removes the part of every node whose liveness key expired.
    async fn sweep(&self) -> Result<(), GroupError> {
        let mut connection = self.connection.clone();
        let nodes: Vec<String> = self
            .bounded(
                redis::cmd("SMEMBERS")
                    .arg(self.nodes_key())
                    .query_async(&mut connection),
            )
            .await?;
        let others: Vec<&String> = nodes.iter().filter(|node| **node != self.node).collect();
        if others.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for node in &others {
            pipe.exists(self.alive_key(node));
        }
        let alive: Vec<bool> = self.bounded(pipe.query_async(&mut connection)).await?;
        let mut budget = SWEEP_GROUPS;
        for (node, alive) in others.into_iter().zip(alive) {
            if alive || budget == 0 {
                continue;
            }
            let groups: Vec<String> = self
                .bounded(
                    redis::cmd("SRANDMEMBER")
                        .arg(self.node_groups_key(node))
                        .arg(budget)
                        .query_async(&mut connection),
                )
                .await?;
            budget -= groups.len();
            tracing::info!(
                node,
                groups = groups.len(),
                "a node stopped refreshing its presence; removing its members"
            );
            let mut back = false;
            for group in &groups {
                // Each removal drops the group from the node's set (see `settle`).
                if self.call(&self.invocation(&self.gone, group, node)).await? < 0 {
                    back = true; // its key is back: it lives
                    break;
                }
            }
            if !back {
                let mut forget = self.forget.prepare_invoke();
                forget
                    .key(self.alive_key(node))
                    .key(self.node_groups_key(node))
                    .key(self.nodes_key())
                    .arg(node);
                self.call(&forget).await?;
            }
        }
        Ok(())
    }

    /// Runs a read; a connection found broken only now (Redis restarted) is replaced and
    /// the read tried once more.
    async fn read<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, GroupError> {
        let mut connection = self.connection.clone();
        match self.bounded(pipe.query_async(&mut connection)).await {
            Err(GroupError::Backend(error))
                if error
                    .downcast_ref::<redis::RedisError>()
                    .is_some_and(redis::RedisError::is_unrecoverable_error) =>
            {
                self.bounded(pipe.query_async(&mut connection)).await
            }
            result => result,
        }
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, GroupError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(GroupError::Backend(
                format!("Redis did not answer within {:?}", self.timeout).into(),
            )),
        }
    }
}

impl PresenceStore for RedisPresence {
    fn change(&self, group: &str, member: &Arc<str>, object: &Arc<str>, delta: i64, drop: bool) {
        let inner = &self.inner;
        {
            let mut local = crate::lock::lock(&inner.local);
            let part = local.members.entry(group.to_owned()).or_default();
            let entry = part
                .entry(member.clone())
                .or_insert_with(|| (0, object.clone()));
            entry.0 = (entry.0 + delta).max(0);
            entry.1 = object.clone();
            if drop && entry.0 == 0 {
                part.remove(member);
            }
            if part.is_empty() {
                local.members.remove(group);
            }
            local.queue.push(Change {
                group: group.to_owned(),
                member: member.clone(),
                object: object.clone(),
                delta,
                drop,
            });
        }
        inner.wake.notify_one();
    }

    fn snapshot<'a>(
        &'a self,
        group: &'a str,
        list: bool,
    ) -> BoxFuture<'a, Result<PresenceSnapshot, GroupError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let [_, _, members_key, objects_key, connections_key, ..] =
                inner.group_keys(group, &inner.node);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .get(&connections_key)
                .hgetall(&members_key)
                .hgetall(&objects_key);
            type Read = (Option<i64>, HashMap<String, i64>, HashMap<String, String>);
            let (connections, members, objects): Read = inner.read(&pipe).await?;
            let list = list.then(|| {
                members
                    .iter()
                    .filter_map(|(member, connections)| {
                        let object = objects.get(member)?;
                        member_from_object(object, (*connections).max(0) as u64)
                    })
                    .collect()
            });
            Ok(PresenceSnapshot {
                group: group.to_owned(),
                connections: connections.unwrap_or(0).max(0) as u64,
                members: members.len() as u64,
                list,
            })
        })
    }

    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<PresenceCount, GroupError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let [_, _, members_key, _, connections_key, ..] = inner.group_keys(group, &inner.node);
            let mut pipe = redis::pipe();
            pipe.atomic().get(&connections_key).hlen(&members_key);
            let (connections, members): (Option<i64>, u64) = inner.read(&pipe).await?;
            Ok(PresenceCount {
                connections: connections.unwrap_or(0).max(0) as u64,
                members,
            })
        })
    }
}

/// Reads the events of a presence payload (after its `P`); `None` when it is malformed.
pub(super) fn decode_events(mut payload: &[u8]) -> Option<Vec<Notice>> {
    fn number(payload: &mut &[u8]) -> Option<u64> {
        let colon = payload.iter().position(|&byte| byte == b':')?;
        let value = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
        *payload = &payload[colon + 1..];
        Some(value)
    }
    fn text(payload: &mut &[u8], len: u64) -> Option<Arc<str>> {
        let len = usize::try_from(len).ok()?;
        let value = std::str::from_utf8(payload.get(..len)?).ok()?;
        *payload = &payload[len..];
        Some(Arc::from(value))
    }
    let mut notices = Vec::new();
    while let Some((&kind, rest)) = payload.split_first() {
        payload = rest;
        let kind = match kind {
            b'j' => Kind::Join,
            b'l' => Kind::Leave,
            _ => return None,
        };
        let members = number(&mut payload)?;
        let len = number(&mut payload)?;
        let member = text(&mut payload, len)?;
        let len = number(&mut payload)?;
        let object = text(&mut payload, len)?;
        notices.push(Notice {
            kind,
            member,
            object,
            members,
        });
    }
    Some(notices)
}

/// Hands a presence payload's events to the sink.
pub(super) fn deliver(sink: &EventSink, group: &str, payload: &[u8]) {
    match decode_events(payload) {
        Some(notices) => {
            for notice in notices {
                sink(group, notice);
            }
        }
        None => tracing::warn!(group, "dropping a malformed presence event from Redis"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_as_the_scripts_write_them() {
        let object = r#"{"id":"u:7","info":null}"#;
        let payload = format!("j2:3:u:7{}:{object}l1:1:x2:{{}}", object.len());
        let notices = decode_events(payload.as_bytes()).unwrap();
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[0].kind, Kind::Join);
        assert_eq!(notices[0].members, 2);
        assert_eq!(&*notices[0].member, "u:7");
        assert_eq!(&*notices[0].object, object);
        assert_eq!(notices[1].kind, Kind::Leave);
        assert_eq!(&*notices[1].member, "x");
        assert_eq!(&*notices[1].object, "{}");
        assert!(decode_events(b"j2:9:short").is_none());
        assert!(decode_events(b"q").is_none());
    }
}
