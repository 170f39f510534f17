//! The client's request and subscription bookkeeping, apart from the socket: which call
//! waits for which id, which groups are subscribed, which subscribes wait for their reply,
//! and what waits for the connection. Plain data, unit-tested without a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::subscription::Delivery;
use super::{ClientError, Command};
use crate::groups::Position;
use crate::protocol;
use crate::subscribe::GroupObject;

/// The most commands kept while offline; more fail at once with `Disconnected`.
pub(super) const MAX_WAITING: usize = 10_000;

/// A request to write: `{"id", "type", "data"?}`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Outgoing {
    pub(super) id: u64,
    pub(super) message_type: String,
    pub(super) data: Option<Value>,
}

/// What an incoming message turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum Routed {
    /// An update, a reply or a pong: taken care of.
    Handled,
    /// Neither a reply nor an update: for the application's `incoming` stream.
    Other(Value),
}

/// A call that waits for its reply: the reply has its id *and* its type, so that a push
/// that happens to carry the same id (a server's own message numbering) is not taken for it.
#[derive(Debug)]
struct PendingCall {
    message_type: String,
    reply: oneshot::Sender<Result<Value, ClientError>>,
}

/// A subscribe request that waits for its reply.
#[derive(Debug)]
struct PendingSubscribe {
    object: GroupObject,
    presence: bool,
    updates: mpsc::UnboundedSender<Delivery>,
    reply: oneshot::Sender<Result<String, ClientError>>,
}

/// A confirmed group and the subscriptions that receive its updates.
#[derive(Debug)]
struct Group {
    object: GroupObject,
    /// Whether a subscription asked for the group's join and leave events.
    presence: bool,
    subscribers: HashMap<u64, mpsc::UnboundedSender<Delivery>>,
    /// The last position seen (reply or push), for groups with history: re-subscribing
    /// sends it as `since`.
    position: Option<Position>,
}

#[derive(Debug)]
pub(super) struct Requests {
    calls: HashMap<u64, PendingCall>,
    /// Confirmed groups: re-subscribed after every reconnection, and receiving updates
    /// meanwhile.
    groups: HashMap<String, Group>,
    /// Subscribe requests by id (the subscription's key) waiting for their reply.
    pending_subscribes: HashMap<u64, PendingSubscribe>,
    /// Re-subscriptions after a reconnection, by request id.
    resubscribing: HashMap<u64, String>,
    /// Calls and subscribes made while offline, sent once connected.
    waiting: Vec<Command>,
    /// The request ids, shared with the callers: the client's own pings and
    /// re-subscriptions take theirs from the same counter, so no two requests share an id.
    next_id: Arc<AtomicU64>,
}

impl Requests {
    pub(super) fn new(next_id: Arc<AtomicU64>) -> Self {
        Self {
            calls: HashMap::new(),
            groups: HashMap::new(),
            pending_subscribes: HashMap::new(),
            resubscribing: HashMap::new(),
            waiting: Vec::new(),
            next_id,
        }
    }

    /// An id for a request of the client's own (a ping, a re-subscription).
    pub(super) fn own_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A command while offline: calls and subscribes wait, unsubscribes forget.
    pub(super) fn offline(&mut self, command: Command) {
        match command {
            Command::Unsubscribe { key, group } => {
                self.forget(key, &group);
            }
            Command::Send { .. } | Command::Close | Command::Listen(_) => {}
            Command::Call { reply, .. } if self.waiting.len() >= MAX_WAITING => {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
            Command::Subscribe { reply, .. } if self.waiting.len() >= MAX_WAITING => {
                let _ = reply.send(Err(ClientError::Disconnected));
            }
            other => self.waiting.push(other),
        }
    }

    /// What to write for a command while connected, after noting what its reply is for.
    pub(super) fn outgoing(&mut self, command: Command) -> Option<Outgoing> {
        match command {
            Command::Call {
                id,
                message_type,
                data,
                reply,
            } => {
                let call = PendingCall {
                    message_type: message_type.clone(),
                    reply,
                };
                self.calls.insert(id, call);
                Some(Outgoing {
                    id,
                    message_type,
                    data,
                })
            }
            Command::Send { message_type, data } => Some(Outgoing {
                id: self.own_id(),
                message_type,
                data,
            }),
            Command::Subscribe {
                id,
                object,
                presence,
                updates,
                reply,
            } => {
                let data = with_since(&object, None, presence);
                let pending = PendingSubscribe {
                    object,
                    presence,
                    updates,
                    reply,
                };
                self.pending_subscribes.insert(id, pending);
                Some(Outgoing {
                    id,
                    message_type: "subscribe".into(),
                    data,
                })
            }
            Command::Unsubscribe { key, group } => {
                let object = self.groups.get(&group).map(|g| g.object.clone());
                if !self.forget(key, &group) {
                    return None;
                }
                Some(Outgoing {
                    id: self.own_id(),
                    message_type: "unsubscribe".into(),
                    data: object.and_then(|o| serde_json::to_value(o).ok()),
                })
            }
            Command::Listen(_) | Command::Close => None,
        }
    }

    /// Drops subscription `key` wherever it is; returns whether its group has no
    /// subscription left (and so should be unsubscribed on the server).
    pub(super) fn forget(&mut self, key: u64, group: &str) -> bool {
        self.pending_subscribes.remove(&key);
        self.waiting
            .retain(|command| !matches!(command, Command::Subscribe { id, .. } if *id == key));
        let Some(members) = self.groups.get_mut(group) else {
            return false;
        };
        members.subscribers.remove(&key);
        if members.subscribers.is_empty() {
            self.groups.remove(group);
            return true;
        }
        false
    }

    /// After (re)connecting: a subscribe for every confirmed group (their updates keep
    /// flowing meanwhile), then what waited: the subscribes that had no reply yet, and the
    /// calls and subscribes made while offline, less those their callers gave up.
    pub(super) fn reconnected(&mut self) -> (Vec<Outgoing>, Vec<Command>) {
        let groups: Vec<(String, Option<Value>)> = self
            .groups
            .iter()
            .map(|(name, group)| {
                let data = with_since(&group.object, group.position.as_ref(), group.presence);
                (name.clone(), data)
            })
            .collect();
        let resubscribes = groups
            .into_iter()
            .map(|(name, data)| {
                let id = self.own_id();
                self.resubscribing.insert(id, name);
                Outgoing {
                    id,
                    message_type: "subscribe".into(),
                    data,
                }
            })
            .collect();
        let pending: Vec<_> = self.pending_subscribes.drain().collect();
        for (id, pending) in pending {
            self.waiting.push(Command::Subscribe {
                id,
                object: pending.object,
                presence: pending.presence,
                updates: pending.updates,
                reply: pending.reply,
            });
        }
        let mut waiting = std::mem::take(&mut self.waiting);
        waiting.retain(|command| !abandoned(command));
        (resubscribes, waiting)
    }

    /// Commands that could not be sent before the connection dropped wait for the next.
    pub(super) fn requeue(&mut self, commands: impl IntoIterator<Item = Command>) {
        self.waiting.extend(commands);
    }

    /// The connection dropped: waiting calls fail with `Disconnected` (they may not be
    /// repeatable); subscriptions stay, to be re-subscribed.
    pub(super) fn connection_lost(&mut self) {
        for (_, call) in self.calls.drain() {
            let _ = call.reply.send(Err(ClientError::Disconnected));
        }
        self.resubscribing.clear();
    }

    /// The client closed: everything waiting fails with `Closed`, subscriptions end.
    pub(super) fn shut_down(&mut self) {
        for (_, call) in self.calls.drain() {
            let _ = call.reply.send(Err(ClientError::Closed));
        }
        for (_, pending) in self.pending_subscribes.drain() {
            let _ = pending.reply.send(Err(ClientError::Closed));
        }
        for command in self.waiting.drain(..) {
            match command {
                Command::Call { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                _ => {}
            }
        }
        self.groups.clear();
    }

    /// Forgets what nobody waits for any more: calls and subscribes whose caller gave up.
    pub(super) fn sweep(&mut self) {
        self.calls.retain(|_, call| !call.reply.is_closed());
        self.pending_subscribes
            .retain(|_, pending| !pending.reply.is_closed() || !pending.updates.is_closed());
    }

    /// Routes one message: a group update, a call's reply, a subscribe's reply, or other.
    pub(super) fn receive(&mut self, mut message: Map<String, Value>) -> Routed {
        let id = message.get("id").and_then(Value::as_u64);
        let message_type = message.get("type").and_then(Value::as_str);
        if message_type == Some("subscription-update") {
            let position = position_in(&message);
            let data = message.remove("data").unwrap_or(Value::Null);
            self.deliver(data, position);
            return Routed::Handled;
        }
        // A reply carries its request's reply type; one without a type (a malformed
        // request's error) is taken as the reply too.
        let answers = |call: &PendingCall| {
            message_type.map_or(true, |t| t == protocol::reply_type(&call.message_type))
        };
        if let Some(id) = id.filter(|id| self.calls.get(id).is_some_and(answers)) {
            if let Some(call) = self.calls.remove(&id) {
                let _ = call.reply.send(outcome(&mut message));
            }
            return Routed::Handled;
        }
        if let Some((id, pending)) = id.and_then(|id| self.pending_subscribes.remove_entry(&id)) {
            self.confirm(id, pending, outcome(&mut message));
            return Routed::Handled;
        }
        if let Some(group) = id.and_then(|id| self.resubscribing.remove(&id)) {
            match outcome(&mut message) {
                Ok(data) => self.resubscribed(&group, &data),
                Err(error) => {
                    tracing::warn!(%group, %error, "re-subscribing after a reconnection was refused; the group's subscriptions end");
                    self.groups.remove(&group);
                }
            }
            return Routed::Handled;
        }
        if matches!(message_type, Some("pong" | "unsubscribe")) {
            return Routed::Handled;
        }
        Routed::Other(Value::Object(message))
    }

    /// Sends an update to the group's subscriptions, and to subscribes of that group still
    /// waiting for their reply (the server joins before it replies); notes its position.
    fn deliver(&mut self, data: Value, position: Option<Position>) {
        let group = data
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(members) = self.groups.get_mut(group) {
            // Another epoch: the stream started over, and what came between is unknown.
            let restarted = matches!(
                (&members.position, &position),
                (Some(known), Some(now)) if known.epoch != now.epoch
            );
            if restarted {
                for updates in members.subscribers.values() {
                    let _ = updates.send(Delivery::Missed);
                }
            }
            if let Some(position) = position {
                note(&mut members.position, position);
            }
            for updates in members.subscribers.values() {
                let _ = updates.send(Delivery::Update(data.clone()));
            }
        }
        for pending in self.pending_subscribes.values() {
            if pending.object.group_name() == group {
                let _ = pending.updates.send(Delivery::Update(data.clone()));
            }
        }
    }

    /// A re-subscription after a reconnection was confirmed: unless the server says it
    /// replayed what was missed, the subscriptions are told to refetch.
    fn resubscribed(&mut self, group: &str, data: &Value) {
        let Some(members) = self.groups.get_mut(group) else {
            return;
        };
        if let Some(position) = data.as_object().and_then(position_in) {
            note(&mut members.position, position);
        }
        if data.get("recovered") != Some(&Value::Bool(true)) {
            for updates in members.subscribers.values() {
                let _ = updates.send(Delivery::Missed);
            }
        }
    }

    fn confirm(
        &mut self,
        key: u64,
        pending: PendingSubscribe,
        outcome: Result<Value, ClientError>,
    ) {
        match outcome {
            Ok(data) => {
                let group = data
                    .get("group")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| pending.object.group_name());
                let position = data.as_object().and_then(position_in);
                let entry = self.groups.entry(group.clone()).or_insert_with(|| Group {
                    object: pending.object,
                    presence: false,
                    subscribers: HashMap::new(),
                    position: None,
                });
                entry.presence |= pending.presence;
                if let Some(position) = position {
                    note(&mut entry.position, position);
                }
                entry.subscribers.insert(key, pending.updates);
                let _ = pending.reply.send(Ok(group));
            }
            Err(error) => {
                let _ = pending.reply.send(Err(error));
            }
        }
    }
}

/// Whether the caller of a waiting command already gave up (its call timed out).
fn abandoned(command: &Command) -> bool {
    match command {
        Command::Call { reply, .. } => reply.is_closed(),
        Command::Subscribe { reply, updates, .. } => reply.is_closed() && updates.is_closed(),
        _ => false,
    }
}

/// The group object as it is sent: with `since`, the last position seen or `null`, so that
/// a group with history gives positions (a server without it ignores the key); and
/// `"presence": true` when a subscription asked for the group's joins and leaves.
fn with_since(object: &GroupObject, position: Option<&Position>, presence: bool) -> Option<Value> {
    let mut value = serde_json::to_value(object).ok()?;
    if let Value::Object(fields) = &mut value {
        let since = position.and_then(|p| serde_json::to_value(p).ok());
        fields.insert("since".into(), since.unwrap_or(Value::Null));
        if presence {
            fields.insert("presence".into(), Value::Bool(true));
        }
    }
    Some(value)
}

/// Keeps the furthest position: a reply may say less than the pushes queued before it.
fn note(known: &mut Option<Position>, seen: Position) {
    match known {
        Some(known) if known.epoch == seen.epoch && known.offset >= seen.offset => {}
        _ => *known = Some(seen),
    }
}

/// The `offset` and `epoch` keys of a push or a subscribe reply.
fn position_in(fields: &Map<String, Value>) -> Option<Position> {
    Some(Position {
        offset: fields.get("offset")?.as_u64()?,
        epoch: fields.get("epoch")?.as_str()?.to_owned(),
    })
}

/// A reply's `data`, or its `error` as an error.
fn outcome(message: &mut Map<String, Value>) -> Result<Value, ClientError> {
    match message.remove("error") {
        Some(error) => Err(ClientError::Reply {
            error,
            data: message.remove("data"),
        }),
        None => Ok(message.remove("data").unwrap_or(Value::Null)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn requests() -> Requests {
        Requests::new(Arc::new(AtomicU64::new(1)))
    }

    fn message(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn todo(id: i64) -> GroupObject {
        GroupObject {
            object_type: "todo".into(),
            id: json!(id),
        }
    }

    type Reply<T> = oneshot::Receiver<Result<T, ClientError>>;

    fn call(id: u64) -> (Command, Reply<Value>) {
        let (reply, replied) = oneshot::channel();
        let command = Command::Call {
            id,
            message_type: "echo".into(),
            data: Some(json!(id)),
            reply,
        };
        (command, replied)
    }

    fn subscribe(
        id: u64,
        object: GroupObject,
    ) -> (Command, Reply<String>, mpsc::UnboundedReceiver<Delivery>) {
        let (reply, replied) = oneshot::channel();
        let (updates, received) = mpsc::unbounded_channel();
        let command = Command::Subscribe {
            id,
            object,
            presence: false,
            updates,
            reply,
        };
        (command, replied, received)
    }

    #[test]
    fn a_group_object_asks_for_presence_only_when_wanted() {
        let object = crate::client::group_object("todo", 1);
        assert_eq!(
            with_since(&object, None, true),
            Some(json!({"type": "todo", "id": 1, "since": null, "presence": true}))
        );
        assert_eq!(
            with_since(&object, None, false),
            Some(json!({"type": "todo", "id": 1, "since": null}))
        );
    }

    #[test]
    fn own_ids_come_from_the_callers_counter_so_none_collide() {
        let counter = Arc::new(AtomicU64::new(1));
        let requests = Requests::new(counter.clone());
        let caller = counter.fetch_add(1, Ordering::Relaxed);
        let own = requests.own_id();
        let caller_again = counter.fetch_add(1, Ordering::Relaxed);
        assert_eq!([caller, own, caller_again], [1, 2, 3]);
    }

    #[test]
    fn replies_go_to_their_calls_by_id_in_any_order() {
        let mut requests = requests();
        let (first, mut first_reply) = call(1);
        let (second, mut second_reply) = call(2);
        assert_eq!(
            requests.outgoing(first),
            Some(Outgoing {
                id: 1,
                message_type: "echo".into(),
                data: Some(json!(1))
            })
        );
        requests.outgoing(second);
        let error = json!({"id": 2, "type": "echo", "error": "nope", "data": 7});
        assert_eq!(requests.receive(message(error)), Routed::Handled);
        let ok = json!({"id": 1, "type": "echo", "data": "one"});
        assert_eq!(requests.receive(message(ok)), Routed::Handled);
        assert_eq!(first_reply.try_recv().unwrap(), Ok(json!("one")));
        assert_eq!(
            second_reply.try_recv().unwrap(),
            Err(ClientError::Reply {
                error: json!("nope"),
                data: Some(json!(7))
            })
        );
        // A push that happens to carry a waiting call's id is not its reply.
        let (third, mut third_reply) = call(3);
        requests.outgoing(third);
        let push = json!({"id": 3, "type": "shout", "data": "hello"});
        assert_eq!(requests.receive(message(push.clone())), Routed::Other(push));
        assert!(third_reply.try_recv().is_err(), "still waiting");
        let reply = json!({"id": 3, "type": "echo", "data": 3});
        requests.receive(message(reply));
        assert_eq!(third_reply.try_recv().unwrap(), Ok(json!(3)));
        // A reply for nobody is somebody else's business.
        let stray = json!({"id": 1, "type": "echo", "data": "again"});
        assert_eq!(
            requests.receive(message(stray.clone())),
            Routed::Other(stray)
        );
    }

    #[test]
    fn a_subscribe_gets_updates_before_its_reply_and_is_resubscribed_after_a_drop() {
        let mut requests = requests();
        let (command, mut replied, mut updates) = subscribe(5, todo(1));
        let sent = requests.outgoing(command).unwrap();
        assert_eq!(sent.message_type, "subscribe");
        assert_eq!(
            sent.data,
            Some(json!({"type": "todo", "id": 1, "since": null}))
        );
        // The server joins before it replies: an update may come first.
        let update = json!({"id": 90, "type": "subscription-update", "data": {"type": "create", "group": "todo-1", "object": {"id": 1}}});
        requests.receive(message(update));
        let Delivery::Update(first) = updates.try_recv().unwrap() else {
            panic!("an update");
        };
        assert_eq!(first["type"], "create");
        let reply = json!({"id": 5, "type": "subscribe", "data": {"group": "todo-1"}});
        requests.receive(message(reply));
        assert_eq!(replied.try_recv().unwrap(), Ok("todo-1".to_owned()));

        requests.connection_lost();
        let (resubscribes, waiting) = requests.reconnected();
        assert!(waiting.is_empty());
        assert_eq!(resubscribes.len(), 1);
        assert_eq!(
            resubscribes[0].data,
            Some(json!({"type": "todo", "id": 1, "since": null}))
        );
        let confirmed =
            json!({"id": resubscribes[0].id, "type": "subscribe", "data": {"group": "todo-1"}});
        assert_eq!(requests.receive(message(confirmed)), Routed::Handled);
        // Unsubscribing the last subscription of the group tells the server.
        let unsubscribe = requests.outgoing(Command::Unsubscribe {
            key: 5,
            group: "todo-1".into(),
        });
        assert_eq!(unsubscribe.unwrap().message_type, "unsubscribe");
        assert!(
            requests.reconnected().0.is_empty(),
            "nothing left to re-subscribe"
        );
    }

    #[test]
    fn the_last_position_seen_is_resumed_and_an_unrecovered_gap_is_told() {
        let mut requests = requests();
        let (command, _replied, mut updates) = subscribe(5, todo(1));
        requests.outgoing(command);
        let reply = json!({"id": 5, "type": "subscribe", "data": {"group": "todo-1", "offset": 3, "epoch": "e"}});
        requests.receive(message(reply));
        let push = json!({"id": 80, "type": "subscription-update", "offset": 4, "epoch": "e", "data": {"type": "update", "group": "todo-1", "object": {"id": 1}}});
        requests.receive(message(push));
        assert!(matches!(updates.try_recv(), Ok(Delivery::Update(_))));
        let (resubscribes, _) = requests.reconnected();
        assert_eq!(
            resubscribes[0].data,
            Some(json!({"type": "todo", "id": 1, "since": {"offset": 4, "epoch": "e"}}))
        );
        let recovered = json!({"id": resubscribes[0].id, "type": "subscribe", "data": {"group": "todo-1", "offset": 6, "epoch": "e", "recovered": true}});
        requests.receive(message(recovered));
        assert!(updates.try_recv().is_err(), "nothing to tell");
        let (resubscribes, _) = requests.reconnected();
        assert_eq!(
            resubscribes[0].data,
            Some(json!({"type": "todo", "id": 1, "since": {"offset": 6, "epoch": "e"}}))
        );
        let lost = json!({"id": resubscribes[0].id, "type": "subscribe", "data": {"group": "todo-1", "offset": 0, "epoch": "f", "recovered": false}});
        requests.receive(message(lost));
        assert!(matches!(updates.try_recv(), Ok(Delivery::Missed)));
    }

    #[test]
    fn a_push_of_another_epoch_tells_of_a_gap_and_a_lagging_reply_does_not_rewind() {
        let mut requests = requests();
        let (command, _replied, mut updates) = subscribe(5, todo(1));
        requests.outgoing(command);
        let reply = json!({"id": 5, "type": "subscribe", "data": {"group": "todo-1", "offset": 3, "epoch": "e"}});
        requests.receive(message(reply));
        let push = |offset: u64, epoch: &str| {
            message(
                json!({"id": 80, "type": "subscription-update", "offset": offset, "epoch": epoch, "data": {"type": "update", "group": "todo-1", "object": {"id": 1}}}),
            )
        };
        requests.receive(push(5, "e"));
        assert!(matches!(updates.try_recv(), Ok(Delivery::Update(_))));
        let (resubscribes, _) = requests.reconnected();
        let lagging = json!({"id": resubscribes[0].id, "type": "subscribe", "data": {"group": "todo-1", "offset": 4, "epoch": "e", "recovered": true}});
        requests.receive(message(lagging));
        let (resubscribes, _) = requests.reconnected();
        assert_eq!(
            resubscribes[0].data,
            Some(json!({"type": "todo", "id": 1, "since": {"offset": 5, "epoch": "e"}}))
        );
        requests.receive(push(1, "f"));
        assert!(matches!(updates.try_recv(), Ok(Delivery::Missed)));
        assert!(matches!(updates.try_recv(), Ok(Delivery::Update(_))));
    }

    #[test]
    fn a_refused_resubscription_ends_the_groups_subscriptions() {
        let mut requests = requests();
        let (command, _replied, _updates) = subscribe(5, todo(1));
        requests.outgoing(command);
        requests.receive(message(
            json!({"id": 5, "type": "subscribe", "data": {"group": "todo-1"}}),
        ));
        let (resubscribes, _) = requests.reconnected();
        let refused =
            json!({"id": resubscribes[0].id, "type": "subscribe", "error": "ACCESS_DENIED"});
        requests.receive(message(refused));
        assert!(requests.reconnected().0.is_empty());
    }

    #[test]
    fn offline_calls_wait_up_to_the_bound_and_a_drop_fails_those_in_flight() {
        let mut requests = requests();
        let (in_flight, mut in_flight_reply) = call(1);
        requests.outgoing(in_flight);
        requests.connection_lost();
        assert_eq!(
            in_flight_reply.try_recv().unwrap(),
            Err(ClientError::Disconnected)
        );
        let mut replies = Vec::new();
        for id in 0..MAX_WAITING as u64 + 1 {
            let (command, reply) = call(10 + id);
            requests.offline(command);
            replies.push(reply);
        }
        let mut over = replies.pop().unwrap();
        assert_eq!(over.try_recv().unwrap(), Err(ClientError::Disconnected));
        // A caller that gave up is not sent for.
        drop(replies.pop());
        let (_, waiting) = requests.reconnected();
        assert_eq!(waiting.len(), MAX_WAITING - 1);
    }

    #[test]
    fn closing_fails_everything_that_waits() {
        let mut requests = requests();
        let (command, mut call_reply) = call(1);
        requests.offline(command);
        let (command, mut subscribe_reply, _updates) = subscribe(2, todo(1));
        requests.outgoing(command);
        requests.shut_down();
        assert_eq!(call_reply.try_recv().unwrap(), Err(ClientError::Closed));
        assert_eq!(
            subscribe_reply.try_recv().unwrap(),
            Err(ClientError::Closed)
        );
    }

    #[test]
    fn an_unsubscribe_while_offline_forgets_a_waiting_subscribe() {
        let mut requests = requests();
        let (command, _replied, _updates) = subscribe(3, todo(1));
        requests.offline(command);
        requests.offline(Command::Unsubscribe {
            key: 3,
            group: "todo-1".into(),
        });
        let (_, waiting) = requests.reconnected();
        assert!(waiting.is_empty());
    }
}
