//! The history of groups across nodes: one Redis stream per group, written and published
//! by one script so that a push's offset, its place in the stream and its place on the
//! channel agree on every node.
//!
//! Keys, hash-tagged so that a group's keys share a Cluster slot:
//! `<prefix>{<group>}:meta` (a hash: `epoch`, `offset`) and `<prefix>{<group>}:stream`
//! (entries with id `<offset>-0` and one field `p`: the policy and the frame). Both expire
//! `ttl` after the last push. A meta hash that is gone (expired, evicted, a Redis restart)
//! starts a new epoch, and the stream with it. A history message on the group's channel
//! is `<offset>:<epoch>:` then the policy and the frame.
//!
//! Reads are shared: subscribers that ask for the same group from the same position wait
//! for one read. A read starts only after every subscriber that waits for it began to hold
//! its live pushes back, so nothing falls between the read and the live pushes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::oneshot;

use super::super::history::{new_epoch, History, Position};
use super::super::GroupError;

/// The scripts' first lines: the stream's epoch in `epoch`; a stream without one (new,
/// expired, evicted) or one to restart (`ARGV[6]` is `1`) starts over with `ARGV[1]`
/// (`started`).
macro_rules! current_epoch {
    () => {
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local started = (not epoch) or ARGV[6] == '1'
if started then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HMSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end"
    };
}

/// Appends a push, bumps the offset, refreshes the TTLs and publishes, atomically.
///
/// KEYS: meta, stream. ARGV: a fresh epoch, ttl in ms, kept entries, channel, payload,
/// `1` to start a new epoch whatever the meta says. Returns the offset.
const APPEND: &str = concat!(
    current_epoch!(),
    r"
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'p', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[4], offset .. ':' .. epoch .. ':' .. ARGV[5])
return offset
"
);

/// Reads the position and, when the epoch matches, the entries from a given id on.
///
/// KEYS: meta, stream. ARGV: a fresh epoch, ttl in ms, the reader's epoch (empty: the
/// position only), the first entry id, the most entries, `1` to start a new epoch.
/// Returns `{epoch, offset}` or `{epoch, offset, entries}`.
const READ: &str = concat!(
    current_epoch!(),
    r"
if started then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local offset = redis.call('HGET', KEYS[1], 'offset')
if ARGV[3] == '' or ARGV[3] ~= epoch then
  return {epoch, offset}
end
return {epoch, offset, redis.call('XRANGE', KEYS[2], ARGV[4], '+', 'COUNT', ARGV[5])}
"
);

/// What a read found: the position, and the entries after the reader's position (when
/// its epoch matched), oldest first.
#[derive(Debug)]
pub(super) struct Read {
    pub(super) position: Position,
    entries: Vec<(u64, Vec<u8>)>,
}

impl Read {
    /// The payloads (policy and frame) a subscriber at `seen` missed, oldest first, or
    /// `None` when they cannot all be told.
    pub(super) fn missed(&self, seen: &Position, max: usize) -> Option<Vec<&[u8]>> {
        let now = &self.position;
        if seen.epoch != now.epoch || seen.offset > now.offset {
            return None;
        }
        let count = now.offset - seen.offset;
        if count > max as u64 || self.entries.len() as u64 != count {
            return None;
        }
        let contiguous = self
            .entries
            .iter()
            .zip(seen.offset + 1..)
            .all(|((offset, _), expected)| *offset == expected);
        contiguous.then(|| self.entries.iter().map(|(_, p)| p.as_slice()).collect())
    }
}

type Waiter = oneshot::Sender<Result<Arc<Read>, String>>;
/// A group and the position read from (none: the position only).
type ReadKey = (String, Option<Position>);

/// The history side of a `RedisGroups`.
pub(super) struct RedisHistory {
    /// Shared, so that a send takes a reference count rather than a copy of the patterns.
    config: RwLock<Option<Arc<History>>>,
    prefix: String,
    append: Script,
    read: Script,
    /// Reads under way, and who waits for the next one of the same key.
    flights: Mutex<HashMap<ReadKey, Vec<Waiter>>>,
    /// Groups whose push could not be recorded: their next write starts a new epoch, so
    /// that nobody resumes across the gap.
    broken: Mutex<HashSet<String>>,
    /// Reads sent to Redis.
    reads: std::sync::atomic::AtomicU64,
}

impl RedisHistory {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            config: RwLock::new(None),
            prefix: prefix.to_owned(),
            append: Script::new(APPEND),
            read: Script::new(READ),
            flights: Mutex::default(),
            broken: Mutex::default(),
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(super) fn configure(&self, history: History) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(history));
    }

    /// The history settings, when `group` keeps one.
    pub(super) fn covering(&self, group: &str) -> Option<Arc<History>> {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        config.as_ref().filter(|h| h.covers(group)).cloned()
    }

    /// Whether `group` keeps a history.
    pub(super) fn covers(&self, group: &str) -> bool {
        let config = self.config.read().unwrap_or_else(|e| e.into_inner());
        config.as_ref().is_some_and(|h| h.covers(group))
    }

    /// How many reads went to Redis so far.
    pub(super) fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn keys(&self, group: &str) -> [String; 2] {
        [
            format!("{}{{{group}}}:meta", self.prefix),
            format!("{}{{{group}}}:stream", self.prefix),
        ]
    }

    fn take_broken(&self, group: &str) -> bool {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(group)
    }

    /// Marks `group`'s stream as missing a push.
    pub(super) fn mark_broken(&self, group: &str) {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(group.to_owned());
    }

    /// Records and publishes a push (`payload`: policy and frame) on `channel`; returns its
    /// offset.
    pub(super) async fn append(
        &self,
        connection: &mut ConnectionManager,
        config: &History,
        group: &str,
        channel: &str,
        payload: &[u8],
    ) -> Result<u64, redis::RedisError> {
        let [meta, stream] = self.keys(group);
        let reset = self.take_broken(group);
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(meta)
            .key(stream)
            .arg(new_epoch())
            .arg(ttl_ms(config.kept_for()))
            .arg(config.kept())
            .arg(channel)
            .arg(payload)
            .arg(if reset { "1" } else { "0" });
        let result = invocation.invoke_async::<u64>(connection).await;
        if result.is_err() && reset {
            self.mark_broken(group);
        }
        result
    }

    /// Reads `group`'s position and what came after `since`, sharing the read with every
    /// caller that asks for the same meanwhile. Call it only after the caller's live
    /// pushes are held back: the read it gets is sent after that.
    pub(super) async fn read_shared(
        self: &Arc<Self>,
        connection: &ConnectionManager,
        config: &History,
        group: &str,
        since: Option<&Position>,
    ) -> Result<Arc<Read>, GroupError> {
        let key: ReadKey = (group.to_owned(), since.cloned());
        let (waiter, answer) = oneshot::channel();
        let lead = {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            match flights.get_mut(&key) {
                Some(waiting) => {
                    waiting.push(waiter);
                    false
                }
                None => {
                    flights.insert(key.clone(), vec![waiter]);
                    true
                }
            }
        };
        if lead {
            let this = self.clone();
            let connection = connection.clone();
            let config = config.clone();
            tokio::spawn(async move { this.fly(connection, config, key).await });
        }
        match answer.await {
            Ok(Ok(read)) => Ok(read),
            Ok(Err(error)) => Err(GroupError::Backend(error.into())),
            Err(_) => Err(GroupError::Backend("the history read was dropped".into())),
        }
    }

    /// Reads for everyone waiting on `key`, again while more are waiting.
    async fn fly(&self, mut connection: ConnectionManager, config: History, key: ReadKey) {
        loop {
            let waiting = {
                let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
                let Some(waiting) = flights.get_mut(&key) else {
                    return;
                };
                if waiting.is_empty() {
                    flights.remove(&key);
                    return;
                }
                std::mem::take(waiting)
            };
            let result = self
                .read(&mut connection, &config, &key.0, key.1.as_ref())
                .await
                .map(Arc::new);
            for waiter in waiting {
                let _ = waiter.send(result.clone());
            }
        }
    }

    async fn read(
        &self,
        connection: &mut ConnectionManager,
        config: &History,
        group: &str,
        since: Option<&Position>,
    ) -> Result<Read, String> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let [meta, stream] = self.keys(group);
        let reset = self.take_broken(group);
        let (epoch, first) = match since {
            Some(seen) => (seen.epoch.as_str(), format!("{}-0", seen.offset + 1)),
            None => ("", String::new()),
        };
        let mut invocation = self.read.prepare_invoke();
        invocation
            .key(meta)
            .key(stream)
            .arg(new_epoch())
            .arg(ttl_ms(config.kept_for()))
            .arg(epoch)
            .arg(first)
            .arg(config.recoverable().max(1))
            .arg(if reset { "1" } else { "0" });
        // A connection found broken only now (Redis restarted) is replaced: once more.
        let value = match invocation.invoke_async::<Value>(connection).await {
            Err(error) if error.is_unrecoverable_error() => {
                tracing::debug!(%error, "the Redis connection broke; reading the history again on a new one");
                invocation.invoke_async::<Value>(connection).await
            }
            result => result,
        };
        let value = match value {
            Ok(value) => value,
            Err(error) => {
                if reset {
                    self.mark_broken(group);
                }
                return Err(error.to_string());
            }
        };
        parse_read(value).ok_or_else(|| "Redis answered the history read in an unknown form".into())
    }
}

/// A TTL in milliseconds, at least 1 (0 would delete at once).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `{epoch, offset[, entries]}` as [`READ`] returns it.
fn parse_read(value: Value) -> Option<Read> {
    let Value::Array(mut parts) = value else {
        return None;
    };
    let entries = if parts.len() == 3 {
        parts.pop().map(parse_entries)??
    } else {
        Vec::new()
    };
    let mut parts = parts.into_iter();
    let epoch = text(parts.next()?)?;
    let offset = text(parts.next()?)?.parse().ok()?;
    Some(Read {
        position: Position { offset, epoch },
        entries,
    })
}

/// XRANGE entries `[[id, [field, value, …]], …]` as offsets and payloads.
fn parse_entries(value: Value) -> Option<Vec<(u64, Vec<u8>)>> {
    let Value::Array(entries) = value else {
        return None;
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(entry) = entry else {
                return None;
            };
            let mut entry = entry.into_iter();
            let id = text(entry.next()?)?;
            let offset = id.strip_suffix("-0")?.parse().ok()?;
            let Value::Array(fields) = entry.next()? else {
                return None;
            };
            let mut fields = fields.into_iter();
            let _name = fields.next()?;
            let Value::BulkString(payload) = fields.next()? else {
                return None;
            };
            Some((offset, payload))
        })
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Splits a history message off the channel: `<offset>:<epoch>:` and the rest.
pub(super) fn split_positioned(payload: &[u8]) -> Option<(u64, &str, &[u8])> {
    let colon = payload.iter().position(|&b| b == b':')?;
    let offset = std::str::from_utf8(&payload[..colon]).ok()?.parse().ok()?;
    let rest = &payload[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    let epoch = std::str::from_utf8(&rest[..colon]).ok()?;
    Some((offset, epoch, &rest[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(offset: u64, entries: &[u64]) -> Read {
        Read {
            position: Position {
                offset,
                epoch: "e".into(),
            },
            entries: entries.iter().map(|&o| (o, vec![b'd'])).collect(),
        }
    }

    fn at(offset: u64) -> Position {
        Position {
            offset,
            epoch: "e".into(),
        }
    }

    #[test]
    fn only_a_contiguous_run_up_to_now_is_a_recovery() {
        assert_eq!(
            read(5, &[3, 4, 5]).missed(&at(2), 10).map(|m| m.len()),
            Some(3)
        );
        assert_eq!(read(5, &[]).missed(&at(5), 10).map(|m| m.len()), Some(0));
        assert!(
            read(5, &[4, 5]).missed(&at(2), 10).is_none(),
            "3 was trimmed"
        );
        assert!(
            read(5, &[3, 4, 5]).missed(&at(2), 2).is_none(),
            "more than max"
        );
        assert!(
            read(5, &[]).missed(&at(6), 10).is_none(),
            "ahead of the stream"
        );
        let other = Position {
            offset: 2,
            epoch: "f".into(),
        };
        assert!(
            read(5, &[3, 4, 5]).missed(&other, 10).is_none(),
            "another epoch"
        );
    }

    #[test]
    fn a_history_message_splits_into_its_position_and_payload() {
        assert_eq!(
            split_positioned(b"16:h3k9:d{\"id\":1}"),
            Some((16, "h3k9", &b"d{\"id\":1}"[..]))
        );
        assert_eq!(split_positioned(b"x:h3k9:d{}"), None);
        assert_eq!(split_positioned(b"16"), None);
    }
}
