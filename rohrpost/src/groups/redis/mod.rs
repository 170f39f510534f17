//! Groups across several servers, through Redis pub/sub (the `redis` feature).
//!
//! Each node keeps its local members in a [`MemoryGroups`]. A group send is delivered to the
//! local members at once and published on the group's Redis channel; every other node with
//! local members of that group is subscribed to the channel and delivers it to them. The
//! payload carries the sending node's id, so a node skips its own messages: every member
//! gets a message exactly once.
//!
//! Redis pub/sub is at-most-once: while Redis is unreachable, local members still get every
//! message, remote nodes miss those sent meanwhile (the send returns
//! [`GroupError::Backend`] after its local delivery), and nothing is replayed when Redis is
//! back. The layer reconnects with backoff and re-subscribes every group with local members.
//! A publish that fails because its connection broke (Redis restarted since the last
//! publish) is retried once on a fresh connection, within the same timeout, so the first
//! send after Redis comes back is not lost.
//!
//! The payload is the node id, the push's [`Policy`] and the frame:
//! `<16 hex digits>:` then `d` (disconnect), `v` (drop oldest) or `c` with the change
//! (`c`reate, `u`pdate, `x` delete), the primary key's length in bytes, `:` and the key;
//! then the frame's JSON text. A payload that starts with `P` carries presence events
//! (see [`presence`](crate::presence)).
//!
//! # History
//!
//! Groups with [`History`] (`ServerBuilder::history`; every node must be given the same)
//! keep their pushes in Redis: one script appends a push to the group's stream, gives it
//! the next offset and publishes `<offset>:<epoch>:` with the policy and the frame. Their
//! members, on the sending node too, get pushes from the channel, in Redis's order, so
//! every member on every node sees offsets strictly increasing, also when several nodes
//! send at once. A subscriber that comes back with `since` is served from the stream
//! (`XRANGE`), and a read is shared by every subscriber that asks for the same meanwhile.
//!
//! A push that Redis cannot take is still delivered to the sending node's members, without
//! a position, and the group's next write starts a new epoch: whoever resumes from before
//! is told `recovered: false` rather than missing it silently. Streams expire `ttl` after
//! their last push; run Redis with `maxmemory-policy noeviction` (a warning at start says
//! so otherwise), since an evicted stream also starts a new epoch.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

mod history;
mod presence;

use self::history::{split_positioned, RedisHistory};
use self::presence::RedisPresence;
use super::history::{with_position, History, Joined, Position, Since};
use super::{GroupError, GroupLayer, GroupStats, MemoryGroups, Policy, Push};
use crate::backoff::Backoff;
use crate::notify::Change;
use crate::presence::store::{EventSink, PresenceStore};
use crate::presence::Presence;
use crate::Connection;

/// The default prefix of the groups' Redis channels: group `todo-1` is channel
/// `rohrpost:group:todo-1`.
pub const DEFAULT_CHANNEL_PREFIX: &str = "rohrpost:group:";
/// The default bound on a Redis call made for a handler (a publish, a first subscribe).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(50);

/// The Redis connection's state, as [`RedisGroups::status`] reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStatus {
    /// Whether the subscription connection is up and every wanted channel subscribed.
    pub connected: bool,
    /// How many times the subscription connection was (re)established.
    pub connections: u64,
    /// Channels currently subscribed.
    pub subscribed: usize,
}

/// A [`GroupLayer`] on Redis pub/sub: run several servers behind a load balancer, and a
/// group send on any of them reaches the members on all of them.
///
/// ```no_run
/// use rohrpost::prelude::*;
/// use rohrpost::Groups;
/// use rohrpost::groups::RedisGroups;
///
/// # async fn start() -> Result<(), Box<dyn std::error::Error>> {
/// let groups = Groups::new(RedisGroups::connect("redis://127.0.0.1:6379/").await?);
/// let server = Server::builder().groups(groups).bind("127.0.0.1:8000").await?;
/// # Ok(()) }
/// ```
///
/// Clones share the same connections and local members.
#[derive(Clone)]
pub struct RedisGroups {
    local: Arc<MemoryGroups>,
    node: String,
    prefix: String,
    publisher: ConnectionManager,
    timeout: Duration,
    commands: mpsc::UnboundedSender<SyncRequest>,
    status: watch::Receiver<RedisStatus>,
    history: Arc<RedisHistory>,
    /// Where presence events from the channels go, once presence is on.
    presence: Arc<std::sync::OnceLock<EventSink>>,
}

/// Asks the subscriber task to bring a group's subscription in line with its local members;
/// the task reads the membership when it gets to it, so the last request always wins.
struct SyncRequest {
    group: String,
    done: Option<oneshot::Sender<()>>,
}

impl RedisGroups {
    /// Connects to Redis at `url` (`redis://host:port/db`), with the default channel prefix
    /// and timeout. Fails when Redis cannot be reached now; after that, outages are
    /// survived (see the module docs).
    pub async fn connect(url: &str) -> Result<Self, GroupError> {
        Self::connect_with(url, DEFAULT_CHANNEL_PREFIX, DEFAULT_REDIS_TIMEOUT).await
    }

    /// Connects with a channel prefix (to share one Redis between applications) and a bound
    /// on each Redis call a handler waits for.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rohrpost::groups::RedisGroups;
    /// use rohrpost::prelude::*;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisGroups::connect_with("redis://127.0.0.1:6379/", "shop:", Duration::from_millis(500)).await?;
    /// // Before taking traffic: the subscription connection is up too.
    /// if !redis.wait_until_connected(Duration::from_secs(5)).await {
    ///     tracing::warn!("Redis pub/sub not up yet: pushes from other nodes are missed until it is");
    /// }
    /// let server = Server::builder().groups(Groups::new(redis)).bind("0.0.0.0:8000").await?;
    /// # let _ = server;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, GroupError> {
        let client = redis::Client::open(url).map_err(backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(MIN_BACKOFF)
            .set_max_delay(MAX_BACKOFF);
        let publisher = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backend)?;
        let local = Arc::new(MemoryGroups::new());
        let node = format!("{:016x}:", super::random_u64());
        let (commands, requests) = mpsc::unbounded_channel();
        let (report, status) = watch::channel(RedisStatus::default());
        let history = Arc::new(RedisHistory::new(prefix));
        let presence = Arc::new(std::sync::OnceLock::new());
        let subscriber = Subscriber {
            client,
            local: local.clone(),
            node: node.clone(),
            prefix: prefix.to_owned(),
            report,
            history: history.clone(),
            presence: presence.clone(),
        };
        tokio::spawn(subscriber.run(requests));
        Ok(Self {
            local,
            node,
            prefix: prefix.to_owned(),
            publisher,
            timeout,
            commands,
            status,
            history,
            presence,
        })
    }

    /// How many history reads this layer sent to Redis: subscribers that come back from
    /// the same position at once share one.
    pub fn history_reads(&self) -> u64 {
        self.history.reads()
    }

    /// The subscription connection's current state.
    pub fn status(&self) -> RedisStatus {
        *self.status.borrow()
    }

    /// Waits until the subscription connection is up with every wanted channel subscribed,
    /// at most `timeout`; returns whether it is.
    pub async fn wait_until_connected(&self, timeout: Duration) -> bool {
        let mut status = self.status.clone();
        tokio::time::timeout(timeout, status.wait_for(|s| s.connected))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Publishes; a connection found broken only now (Redis restarted since the last
    /// publish) is replaced and the publish tried once more. The connection manager starts
    /// the reconnection when it sees the error; the second attempt waits for it.
    async fn publish(&self, command: &redis::Cmd) -> Result<(), redis::RedisError> {
        let mut publisher = self.publisher.clone();
        match command.query_async::<i64>(&mut publisher).await {
            Err(error) if error.is_unrecoverable_error() => {
                tracing::debug!(%error, "the Redis publishing connection broke; publishing again on a new one");
                command.query_async::<i64>(&mut publisher).await.map(drop)
            }
            result => result.map(drop),
        }
    }

    /// Waits (boundedly) until the group's channel is subscribed.
    async fn subscribed(&self, group: &str) {
        if tokio::time::timeout(self.timeout, self.sync(group))
            .await
            .is_err()
        {
            tracing::warn!(
                group,
                "Redis did not confirm the subscription in time; local delivery only until it does"
            );
        }
    }

    /// Sends a push of a group with history: recorded and published by one script; the
    /// members here get it from the channel. When Redis cannot take it, they get it at
    /// once without a position, and the stream's next write starts a new epoch.
    async fn send_recorded(
        &self,
        group: &str,
        push: &Push,
        history: &History,
    ) -> Result<usize, GroupError> {
        let mut payload = Vec::with_capacity(48 + push.frame().len());
        if let Some(id) = push.excepted() {
            // Only this node's connection of that id is left out.
            payload.push(b'e');
            payload.extend_from_slice(self.node.as_bytes());
            payload.extend_from_slice(id.to_string().as_bytes());
            payload.push(b':');
        }
        encode_policy(push.policy(), &mut payload);
        payload.extend_from_slice(push.frame().as_bytes());
        let channel = format!("{}{group}", self.prefix);
        let append = async {
            let mut publisher = self.publisher.clone();
            match self
                .history
                .append(&mut publisher, history, group, &channel, &payload)
                .await
            {
                Err(error) if error.is_unrecoverable_error() => {
                    tracing::debug!(%error, "the Redis publishing connection broke; recording again on a new one");
                    self.history
                        .append(&mut publisher, history, group, &channel, &payload)
                        .await
                }
                result => result,
            }
        };
        let error = match tokio::time::timeout(self.timeout, append).await {
            Ok(Ok(_offset)) => return Ok(self.local.member_count(group)),
            Ok(Err(error)) => backend(error),
            Err(_) => GroupError::Backend(
                format!("Redis did not take the push within {:?}", self.timeout).into(),
            ),
        };
        self.history.mark_broken(group);
        self.local.deliver_unpositioned(group, push);
        Err(error)
    }

    /// Joins a group with history as a subscriber that asked for positions.
    async fn join_recorded(
        &self,
        group: &str,
        connection: &Connection,
        since: &Since,
        history: &History,
    ) -> Result<Joined, GroupError> {
        let seen = match since {
            Since::After(seen) => Some(seen),
            _ => None,
        };
        // Hold live pushes back until the read, so that none falls between them.
        self.local.add_positioned(group, connection, seen.is_some());
        self.subscribed(group).await;
        let read = self
            .history
            .read_shared(&self.publisher, history, group, seen);
        let read = match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(read)) => read,
            failed => {
                self.leave(group, connection);
                return Err(match failed {
                    Ok(Err(error)) => error,
                    _ => GroupError::Backend(
                        format!(
                            "Redis did not answer the history read within {:?}",
                            self.timeout
                        )
                        .into(),
                    ),
                });
            }
        };
        let Some(seen) = seen else {
            return Ok(Joined {
                position: Some(read.position.clone()),
                recovered: None,
            });
        };
        let missed = read.missed(seen, history.recoverable());
        let recovered = missed.is_some();
        let replay = missed
            .unwrap_or_default()
            .into_iter()
            .zip(seen.offset + 1..)
            .filter_map(|(payload, offset)| {
                let (_, payload) = split_except(payload)?;
                let (_, frame) = decode_policy(payload)?;
                let frame = std::str::from_utf8(frame).ok()?;
                let position = Position {
                    offset,
                    epoch: read.position.epoch.clone(),
                };
                Some(Utf8Bytes::from(with_position(frame, &position)))
            })
            .collect();
        let last = self
            .local
            .release(group, connection, replay, &read.position)
            .ok_or(GroupError::Closed)?;
        Ok(Joined {
            position: Some(Position {
                offset: last,
                epoch: read.position.epoch.clone(),
            }),
            recovered: Some(recovered),
        })
    }

    fn sync(&self, group: &str) -> oneshot::Receiver<()> {
        let (done, synced) = oneshot::channel();
        let _ = self.commands.send(SyncRequest {
            group: group.to_owned(),
            done: Some(done),
        });
        synced
    }

    fn sync_later(&self, group: &str) {
        let _ = self.commands.send(SyncRequest {
            group: group.to_owned(),
            done: None,
        });
    }
}

impl GroupLayer for RedisGroups {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
    ) -> BoxFuture<'a, Result<(), GroupError>> {
        Box::pin(async move {
            self.local.add(group, connection);
            // Wait (boundedly) for the channel subscription, so that messages sent right
            // after the join reply are not missed: also when another member's subscribe is
            // still in flight (requests are applied in order, and one for a group already
            // subscribed is answered at once). If Redis is down, the member is still joined
            // locally and the channel is subscribed on reconnection.
            self.subscribed(group).await;
            Ok(())
        })
    }

    fn leave(&self, group: &str, connection: &Connection) -> bool {
        let was_member = self.local.leave(group, connection);
        if was_member && self.local.member_count(group) == 0 {
            self.sync_later(group);
        }
        was_member
    }

    fn leave_all(&self, connection: &Connection) {
        let groups = self.local.groups_of(connection);
        self.local.leave_all(connection);
        for group in groups {
            if self.local.member_count(&group) == 0 {
                self.sync_later(&group);
            }
        }
    }

    fn send<'a>(&'a self, group: &'a str, push: Push) -> BoxFuture<'a, Result<usize, GroupError>> {
        Box::pin(async move {
            if let Some(history) = self.history.covering(group) {
                return self.send_recorded(group, &push, &history).await;
            }
            let delivered = self.local.deliver(group, &push);
            let frame = push.frame();
            let mut payload = Vec::with_capacity(self.node.len() + 16 + frame.len());
            payload.extend_from_slice(self.node.as_bytes());
            encode_policy(push.policy(), &mut payload);
            payload.extend_from_slice(frame.as_bytes());
            let channel = format!("{}{group}", self.prefix);
            let mut command = redis::cmd("PUBLISH");
            command.arg(&channel).arg(payload);
            match tokio::time::timeout(self.timeout, self.publish(&command)).await {
                Ok(Ok(())) => Ok(delivered),
                Ok(Err(error)) => Err(backend(error)),
                Err(_) => Err(GroupError::Backend(
                    format!("Redis did not take the publish within {:?}", self.timeout).into(),
                )),
            }
        })
    }

    fn groups_of(&self, connection: &Connection) -> Vec<String> {
        self.local.groups_of(connection)
    }

    fn member_count(&self, group: &str) -> usize {
        self.local.member_count(group)
    }

    fn is_member(&self, group: &str, connection: &Connection) -> bool {
        self.local.is_member(group, connection)
    }

    fn stats(&self) -> GroupStats {
        self.local.stats()
    }

    fn configure_history(&self, history: History) -> Result<(), GroupError> {
        self.history.configure(history);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(warn_unless_noeviction(self.publisher.clone()));
        }
        Ok(())
    }

    fn presence_store(
        &self,
        presence: &Presence,
        sink: EventSink,
    ) -> Option<Arc<dyn PresenceStore>> {
        if self.presence.set(sink).is_err() {
            tracing::error!("presence was turned on twice for one RedisGroups");
            return None;
        }
        Some(Arc::new(RedisPresence::start(
            &self.prefix,
            self.node.trim_end_matches(':'),
            self.publisher.clone(),
            self.timeout,
            presence,
        )))
    }

    fn join_since<'a>(
        &'a self,
        group: &'a str,
        connection: &'a Connection,
        since: &'a Since,
    ) -> BoxFuture<'a, Result<Joined, GroupError>> {
        Box::pin(async move {
            match self.history.covering(group) {
                Some(history) if since.wants_positions() => {
                    self.join_recorded(group, connection, since, &history).await
                }
                _ => {
                    self.join(group, connection).await?;
                    Ok(Joined::without_history(since))
                }
            }
        })
    }

    fn position<'a>(
        &'a self,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, GroupError>> {
        Box::pin(async move {
            let Some(history) = self.history.covering(group) else {
                return Ok(None);
            };
            let read = self
                .history
                .read_shared(&self.publisher, &history, group, None);
            match tokio::time::timeout(self.timeout, read).await {
                Ok(read) => Ok(Some(read?.position.clone())),
                Err(_) => Err(GroupError::Backend(
                    format!(
                        "Redis did not answer the position read within {:?}",
                        self.timeout
                    )
                    .into(),
                )),
            }
        })
    }
}

/// Warns when Redis may evict keys: an evicted stream cannot be replayed.
async fn warn_unless_noeviction(mut connection: ConnectionManager) {
    let policy = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(&mut connection)
        .await;
    match policy.as_deref() {
        Ok([_, policy]) if policy == "noeviction" => {}
        Ok([_, policy]) => tracing::warn!(
            policy,
            "Redis's maxmemory-policy is not noeviction: evicted history streams start over, and their subscribers refetch"
        ),
        Ok(_) | Err(_) => tracing::debug!("could not read Redis's maxmemory-policy (CONFIG GET is refused?)"),
    }
}

impl fmt::Debug for RedisGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGroups")
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

fn backend(error: redis::RedisError) -> GroupError {
    GroupError::Backend(Box::new(error))
}

/// Writes a push's policy into a payload (see the module docs).
fn encode_policy(policy: &Policy, payload: &mut Vec<u8>) {
    match policy {
        Policy::Disconnect => payload.push(b'd'),
        Policy::DropOldest => payload.push(b'v'),
        Policy::Conflate { pk, change } => {
            payload.push(b'c');
            payload.push(match change {
                Change::Create => b'c',
                Change::Update => b'u',
                Change::Delete => b'x',
            });
            payload.extend_from_slice(pk.len().to_string().as_bytes());
            payload.push(b':');
            payload.extend_from_slice(pk.as_bytes());
        }
    }
}

/// Reads the connection a push leaves out off the front of a payload (`e`, the node id with
/// its colon, the connection id and a colon), when there is one; returns it and the rest.
#[allow(clippy::type_complexity)]
fn split_except(payload: &[u8]) -> Option<(Option<(&[u8], u64)>, &[u8])> {
    let Some(rest) = payload.strip_prefix(b"e") else {
        return Some((None, payload));
    };
    let node = rest.get(..17)?;
    let rest = &rest[17..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let id = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((Some((node, id)), &rest[colon + 1..]))
}

/// Reads a push's policy off the front of a payload; returns it and the rest (the frame).
fn decode_policy(payload: &[u8]) -> Option<(Policy, &[u8])> {
    let (&kind, rest) = payload.split_first()?;
    match kind {
        b'd' => Some((Policy::Disconnect, rest)),
        b'v' => Some((Policy::DropOldest, rest)),
        b'c' => {
            let (&change, rest) = rest.split_first()?;
            let change = match change {
                b'c' => Change::Create,
                b'u' => Change::Update,
                b'x' => Change::Delete,
                _ => return None,
            };
            let colon = rest.iter().position(|&byte| byte == b':')?;
            let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            let rest = &rest[colon + 1..];
            let pk = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
            Some((Policy::Conflate { pk, change }, &rest[len..]))
        }
        _ => None,
    }
}

/// The task that owns the subscription connection.
struct Subscriber {
    client: redis::Client,
    local: Arc<MemoryGroups>,
    node: String,
    prefix: String,
    report: watch::Sender<RedisStatus>,
    history: Arc<RedisHistory>,
    presence: Arc<std::sync::OnceLock<EventSink>>,
}

/// Why a subscription connection ended.
enum Lost {
    /// The layer was dropped: stop.
    Dropped,
    /// Redis went away: reconnect.
    Connection,
}

impl Subscriber {
    async fn run(self, mut requests: mpsc::UnboundedReceiver<SyncRequest>) {
        let mut subscribed: HashSet<String> = HashSet::new();
        let mut backoff = Backoff::new(MIN_BACKOFF, MAX_BACKOFF);
        loop {
            match self.client.get_async_pubsub().await {
                Ok(pubsub) => {
                    backoff.reset();
                    subscribed.clear();
                    match self.serve(pubsub, &mut requests, &mut subscribed).await {
                        Lost::Dropped => return,
                        Lost::Connection => {
                            tracing::warn!("lost the Redis subscription connection; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, retry_in = ?backoff.upcoming(), "cannot connect to Redis for group subscriptions");
                }
            }
            self.report.send_modify(|s| {
                s.connected = false;
                s.subscribed = 0;
            });
            // Wait out the backoff, acknowledging joins meanwhile: they are local-only
            // until the connection is back, and are subscribed then.
            let pause = tokio::time::sleep(backoff.next_wait());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    request = requests.recv() => match request {
                        Some(request) => drop(request.done),
                        None => return,
                    },
                }
            }
        }
    }

    /// Subscribes every group with local members, then follows requests and delivers
    /// messages until the connection or the layer goes away.
    async fn serve(
        &self,
        pubsub: redis::aio::PubSub,
        requests: &mut mpsc::UnboundedReceiver<SyncRequest>,
        subscribed: &mut HashSet<String>,
    ) -> Lost {
        let (mut sink, mut messages) = pubsub.split();
        for group in self.local_groups() {
            if self.apply(&mut sink, &group, subscribed).await.is_err() {
                return Lost::Connection;
            }
        }
        self.report.send_modify(|s| {
            s.connected = true;
            s.connections += 1;
            s.subscribed = subscribed.len();
        });
        tracing::info!(
            groups = subscribed.len(),
            "Redis group subscriptions (re)established"
        );
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return Lost::Dropped };
                    if self.apply(&mut sink, &request.group, subscribed).await.is_err() {
                        return Lost::Connection;
                    }
                    self.report.send_modify(|s| s.subscribed = subscribed.len());
                    if let Some(done) = request.done {
                        let _ = done.send(());
                    }
                }
                message = messages.next() => {
                    let Some(message) = message else { return Lost::Connection };
                    self.deliver(&message);
                }
            }
        }
    }

    /// Subscribes or unsubscribes `group`'s channel to match its local members now.
    async fn apply(
        &self,
        sink: &mut PubSubSink,
        group: &str,
        subscribed: &mut HashSet<String>,
    ) -> Result<(), redis::RedisError> {
        let wanted = self.local.member_count(group) > 0;
        let channel = format!("{}{group}", self.prefix);
        if wanted && !subscribed.contains(group) {
            sink.subscribe(&channel).await?;
            subscribed.insert(group.to_owned());
        } else if !wanted && subscribed.remove(group) {
            sink.unsubscribe(&channel).await?;
        }
        Ok(())
    }

    fn local_groups(&self) -> Vec<String> {
        self.local.group_names()
    }

    /// Hands a message from another node to the local members.
    fn deliver(&self, message: &redis::Msg) {
        let Some(group) = message.get_channel_name().strip_prefix(&self.prefix) else {
            return;
        };
        let payload = message.get_payload_bytes();
        if let Some(events) = payload.strip_prefix(b"P") {
            if let Some(sink) = self.presence.get() {
                presence::deliver(sink, group, events);
            }
            return;
        }
        if self.history.covers(group) {
            self.deliver_recorded(group, payload);
            return;
        }
        let Some(frame) = payload.get(self.node.len()..) else {
            return;
        };
        if payload.starts_with(self.node.as_bytes()) {
            return; // ours: delivered locally when it was sent
        }
        // The node id is 17 ASCII bytes; then the policy, then the frame's UTF-8 text.
        let Some((policy, frame)) = decode_policy(frame) else {
            tracing::warn!(
                group,
                "dropping a Redis group message without a policy (a node of another version?)"
            );
            return;
        };
        match std::str::from_utf8(frame) {
            Ok(text) => {
                let push = Push::new(group, Utf8Bytes::from(text), policy);
                self.local.deliver(group, &push);
            }
            Err(error) => {
                tracing::warn!(group, %error, "dropping a Redis group message that is not UTF-8")
            }
        }
    }
}

impl Subscriber {
    /// Hands a push of a group with history to the local members, with its position.
    fn deliver_recorded(&self, group: &str, payload: &[u8]) {
        let decoded = split_positioned(payload).and_then(|(offset, epoch, rest)| {
            let (except, rest) = split_except(rest)?;
            let (policy, frame) = decode_policy(rest)?;
            Some((
                offset,
                epoch,
                except,
                policy,
                std::str::from_utf8(frame).ok()?,
            ))
        });
        let Some((offset, epoch, except, policy, frame)) = decoded else {
            tracing::warn!(
                group,
                "dropping a Redis group message without a position (is `history` the same on every node?)"
            );
            return;
        };
        let position = Position {
            offset,
            epoch: epoch.to_owned(),
        };
        let mut push = Push::new(group, Utf8Bytes::from(frame), policy);
        if let Some((node, id)) = except {
            if node == self.node.as_bytes() {
                push.except = Some(id);
            }
        }
        let positioned = push.with_frame(Utf8Bytes::from(with_position(frame, &position)));
        let epoch: Arc<str> = Arc::from(epoch);
        self.local
            .deliver_at(group, offset, &epoch, &push, &positioned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_travel_with_the_frame() {
        let policies = [
            Policy::Disconnect,
            Policy::DropOldest,
            Policy::Conflate {
                pk: "7".into(),
                change: Change::Update,
            },
            Policy::Conflate {
                pk: "a:b{".into(),
                change: Change::Delete,
            },
            Policy::Conflate {
                pk: String::new(),
                change: Change::Create,
            },
        ];
        for policy in policies {
            let mut payload = Vec::new();
            encode_policy(&policy, &mut payload);
            payload.extend_from_slice(b"{\"id\":1}");
            let (decoded, frame) = decode_policy(&payload).expect("decodes");
            assert_eq!(decoded, policy);
            assert_eq!(frame, b"{\"id\":1}");
        }
        assert!(decode_policy(b"{\"id\":1}").is_none());
        assert!(decode_policy(b"cu99:short").is_none());
    }
}
