//! Resumable subscriptions: the pushes of chosen groups kept in a bounded stream, each with
//! its position, so that a client that reconnects gets exactly what it missed.
//!
//! Every push to a group with history gets the next `offset` (1, 2, 3, … in the group's
//! stream) and the stream's `epoch`, a short random text that changes whenever the stream
//! was lost (a restart of the process, a stream that expired). A client opts in per group
//! by sending `since` in the group object it subscribes with (rohrpost.js re-sends that
//! object unchanged when it reconnects):
//!
//! - `"since": null`: the reply carries the current position, `{"group", "offset",
//!   "epoch"}`, and the group's pushes to this connection carry `"offset"` and `"epoch"`
//!   beside `"data"`;
//! - `"since": {"offset": 12, "epoch": "h3k9"}`: the pushes after offset 12 are queued first
//!   as ordinary `subscription-update` messages, then the reply `{"group", "offset",
//!   "epoch", "recovered": true}`. When they cannot be replayed (another epoch, trimmed
//!   from the stream, expired, more than `max_recovered` of them, a group without history)
//!   nothing is replayed and the reply says `"recovered": false` with the current position:
//!   the client refetches.
//!
//! A client that never sends `since` sees exactly the bytes it saw before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Which groups keep a history of their pushes, and how much of it.
///
/// ```
/// use std::time::Duration;
/// use rohrpost::groups::History;
///
/// let history = History::groups(["todo-*", "todos-*"])
///     .size(100)
///     .ttl(Duration::from_secs(300));
/// assert!(history.covers("todo-1"));
/// assert!(!history.covers("chat-1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    patterns: GroupPatterns,
    size: usize,
    ttl: Duration,
    max_recovered: usize,
}

/// Default pushes kept per group.
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// Default time a group's stream is kept after its last push.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);

impl History {
    /// History for the groups whose names match one of `patterns`, where `*` stands for
    /// any text (`"todo-*"`, `"*"`); 100 pushes per group, kept 5 minutes after the last.
    pub fn groups<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            patterns: GroupPatterns::new(patterns),
            size: DEFAULT_HISTORY_SIZE,
            ttl: DEFAULT_HISTORY_TTL,
            max_recovered: DEFAULT_HISTORY_SIZE,
        }
    }

    /// How many pushes each group keeps (at least 1); `max_recovered` follows unless set.
    pub fn size(mut self, pushes: usize) -> Self {
        let follows = self.max_recovered == self.size;
        self.size = pushes.max(1);
        if follows {
            self.max_recovered = self.size;
        }
        self
    }

    /// How long a group's stream is kept after its last push; a client that comes back
    /// later gets `"recovered": false`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The most pushes replayed to one subscriber (default: the size); past that it gets
    /// `"recovered": false` and refetches.
    pub fn max_recovered(mut self, pushes: usize) -> Self {
        self.max_recovered = pushes;
        self
    }

    /// Whether `group` keeps a history.
    pub fn covers(&self, group: &str) -> bool {
        self.patterns.covers(group)
    }

    /// Pushes kept per group.
    #[cfg(feature = "redis")]
    pub(crate) fn kept(&self) -> usize {
        self.size
    }

    /// How long a stream is kept after its last push.
    #[cfg(feature = "redis")]
    pub(crate) fn kept_for(&self) -> Duration {
        self.ttl
    }

    /// The most pushes replayed to one subscriber.
    #[cfg(feature = "redis")]
    pub(crate) fn recoverable(&self) -> usize {
        self.max_recovered
    }
}

/// Group-name patterns, where `*` stands for any text: which groups keep a history, or
/// presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupPatterns(Vec<String>);

impl GroupPatterns {
    pub(crate) fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self(patterns.into_iter().map(Into::into).collect())
    }

    /// Whether `group` matches one of the patterns.
    pub(crate) fn covers(&self, group: &str) -> bool {
        self.0.iter().any(|pattern| glob(pattern, group))
    }
}

/// `*` matches any text, everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A position in a group's stream: the offset of its last push and the stream's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Position {
    /// The offset of the last push (0 before the first).
    pub offset: u64,
    /// The stream's epoch: positions of another epoch cannot be resumed.
    pub epoch: String,
}

/// What a subscriber asks to recover, from the `since` key of its group object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Since {
    /// No `since`: a subscriber that knows nothing of positions (today's bytes).
    #[default]
    Absent,
    /// `"since": null`: only the current position, and positions on its pushes.
    Now,
    /// `"since": {"offset", "epoch"}`: what came after this position.
    After(Position),
}

impl Since {
    /// Whether the subscriber asked for positions at all.
    pub fn wants_positions(&self) -> bool {
        !matches!(self, Since::Absent)
    }

    /// Reads the `since` key of a group object: absent, `null` or a position. Use it as
    /// `#[serde(default, deserialize_with = "Since::deserialize_present")]`.
    ///
    /// ```
    /// use rohrpost::groups::{Position, Since};
    /// use serde::Deserialize;
    ///
    /// #[derive(Deserialize)]
    /// struct Follow {
    ///     board: String,
    ///     #[serde(default, deserialize_with = "Since::deserialize_present")]
    ///     since: Since,
    /// }
    ///
    /// let read = |text: &str| serde_json::from_str::<Follow>(text).unwrap().since;
    /// assert_eq!(read(r#"{"board": "b1"}"#), Since::Absent);
    /// assert_eq!(read(r#"{"board": "b1", "since": null}"#), Since::Now);
    /// assert_eq!(
    ///     read(r#"{"board": "b1", "since": {"offset": 7, "epoch": "e1"}}"#),
    ///     Since::After(Position { offset: 7, epoch: "e1".into() }),
    /// );
    /// ```
    pub fn deserialize_present<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Self, D::Error> {
        Ok(match Option::<Position>::deserialize(deserializer)? {
            None => Since::Now,
            Some(position) => Since::After(position),
        })
    }
}

/// How a subscribe with history went.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Joined {
    /// The group's position now, when it keeps a history and the subscriber asked.
    pub position: Option<Position>,
    /// Whether what the subscriber missed was replayed (only when it gave a position).
    pub recovered: Option<bool>,
}

impl Joined {
    /// A join to a group without history: no position, and nothing recovered for a
    /// subscriber that gave one.
    pub(crate) fn without_history(since: &Since) -> Self {
        Self {
            position: None,
            recovered: matches!(since, Since::After(_)).then_some(false),
        }
    }
}

/// The in-process streams of the groups with history.
#[derive(Debug)]
pub(crate) struct Streams {
    config: History,
    streams: HashMap<Arc<str>, Stream>,
    pruned: Instant,
}

#[derive(Debug)]
struct Stream {
    epoch: String,
    last: u64,
    /// The kept pushes, oldest first, as opted-in subscribers get them.
    entries: VecDeque<(u64, Utf8Bytes)>,
    touched: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            last: 0,
            entries: VecDeque::new(),
            touched: Instant::now(),
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.last,
            epoch: self.epoch.clone(),
        }
    }
}

/// Streams are scanned for expired ones at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl Streams {
    pub(crate) fn new(config: History) -> Self {
        Self {
            config,
            streams: HashMap::new(),
            pruned: Instant::now(),
        }
    }

    pub(crate) fn covers(&self, group: &str) -> bool {
        self.config.covers(group)
    }

    /// The group's stream, a fresh one (new epoch) when it had none or it expired.
    fn stream(&mut self, group: &str) -> &mut Stream {
        let ttl = self.config.ttl;
        let stream = self
            .streams
            .entry(Arc::from(group))
            .or_insert_with(Stream::new);
        if stream.touched.elapsed() > ttl {
            *stream = Stream::new();
        }
        stream
    }

    /// The group's position now.
    pub(crate) fn position(&mut self, group: &str) -> Position {
        self.stream(group).position()
    }

    /// Appends a push; returns its position and the frame opted-in subscribers get.
    pub(crate) fn append(&mut self, group: &str, frame: &str) -> (Position, Utf8Bytes) {
        self.prune();
        let size = self.config.size;
        let stream = self.stream(group);
        stream.last += 1;
        stream.touched = Instant::now();
        let position = stream.position();
        let positioned = Utf8Bytes::from(with_position(frame, &position));
        stream
            .entries
            .push_back((position.offset, positioned.clone()));
        while stream.entries.len() > size {
            stream.entries.pop_front();
        }
        (position, positioned)
    }

    /// What a subscriber that saw `since` missed, oldest first, or `None` when that cannot
    /// be told (another epoch, trimmed, more than `max_recovered`).
    pub(crate) fn missed(&mut self, group: &str, since: &Position) -> Option<Vec<Utf8Bytes>> {
        let max = self.config.max_recovered as u64;
        let stream = self.stream(group);
        if since.epoch != stream.epoch || since.offset > stream.last {
            return None;
        }
        let count = stream.last - since.offset;
        if count > max {
            return None;
        }
        let oldest = stream
            .entries
            .front()
            .map_or(stream.last + 1, |(offset, _)| *offset);
        if since.offset + 1 < oldest {
            return None;
        }
        Some(
            stream
                .entries
                .iter()
                .filter(|(offset, _)| *offset > since.offset)
                .map(|(_, frame)| frame.clone())
                .collect(),
        )
    }

    /// Forgets expired streams, now and then.
    fn prune(&mut self) {
        if self.pruned.elapsed() < PRUNE_EVERY {
            return;
        }
        self.pruned = Instant::now();
        let ttl = self.config.ttl;
        self.streams
            .retain(|_, stream| stream.touched.elapsed() <= ttl);
    }
}

/// A short random text: 8 base-36 digits.
pub(crate) fn new_epoch() -> String {
    let mut n = super::random_u64();
    let mut epoch = String::with_capacity(8);
    for _ in 0..8 {
        let digit = (n % 36) as u32;
        epoch.push(char::from_digit(digit, 36).unwrap_or('0'));
        n /= 36;
    }
    epoch
}

/// `frame` with `"offset"` and `"epoch"` beside its other keys, between its `type` and
/// its `data`. A frame that is not a JSON object is left as it is.
pub(crate) fn with_position(frame: &str, position: &Position) -> String {
    let offset = position.offset.to_string();
    let epoch = serde_json::to_string(&position.epoch).unwrap_or_default();
    crate::message::rewrite_frame(frame, &[("offset", &offset), ("epoch", &epoch)])
        .unwrap_or_else(|| frame.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_with_stars() {
        assert!(glob("todo-*", "todo-1"));
        assert!(glob("todo-*", "todo-"));
        assert!(!glob("todo-*", "todos-all"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "a-x-b-y-c"));
        assert!(!glob("a*b*c", "a-x-c"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn a_frame_gets_its_position_between_type_and_data() {
        let position = Position {
            offset: 16,
            epoch: "h3k9".into(),
        };
        let frame =
            r#"{"id":7,"type":"subscription-update","data":{"type":"update","object":{"id":1}}}"#;
        assert_eq!(
            with_position(frame, &position),
            r#"{"id":7,"type":"subscription-update","offset":16,"epoch":"h3k9","data":{"type":"update","object":{"id":1}}}"#
        );
        assert_eq!(with_position("[1]", &position), "[1]");
    }

    #[test]
    fn missed_pushes_are_replayed_only_when_the_stream_still_holds_them() {
        let history = History::groups(["g-*"]).size(3).max_recovered(2);
        let mut streams = Streams::new(history);
        let start = streams.position("g-1");
        assert_eq!(start.offset, 0);
        for n in 1..=4 {
            let (position, _) = streams.append("g-1", &format!(r#"{{"id":{n}}}"#));
            assert_eq!(position.offset, n);
            assert_eq!(position.epoch, start.epoch);
        }
        let at = |offset| Position {
            offset,
            epoch: start.epoch.clone(),
        };
        let replayed = streams
            .missed("g-1", &at(2))
            .expect("offsets 3 and 4 are kept");
        assert_eq!(replayed.len(), 2);
        assert!(
            replayed[0].starts_with(r#"{"id":3,"offset":3"#),
            "{}",
            replayed[0]
        );
        assert_eq!(streams.missed("g-1", &at(4)), Some(Vec::new()));
        assert_eq!(
            streams.missed("g-1", &at(1)),
            None,
            "more than max_recovered"
        );
        let trimmed = History::groups(["*"]).size(2);
        let mut small = Streams::new(trimmed);
        let epoch = small.position("x").epoch;
        for _ in 0..3 {
            small.append("x", "{}");
        }
        let old = Position { offset: 0, epoch };
        assert_eq!(small.missed("x", &old), None, "offset 1 was trimmed");
        let other = Position {
            offset: 4,
            epoch: "other".into(),
        };
        assert_eq!(streams.missed("g-1", &other), None, "another epoch");
    }

    #[test]
    fn an_expired_stream_starts_over_with_another_epoch() {
        let history = History::groups(["*"]).ttl(Duration::ZERO);
        let mut streams = Streams::new(history);
        let (first, _) = streams.append("g", "{}");
        std::thread::sleep(Duration::from_millis(5));
        let now = streams.position("g");
        assert_ne!(now.epoch, first.epoch);
        assert_eq!(now.offset, 0);
        assert_eq!(streams.missed("g", &first), None);
    }
}
