//! The messages a server pushes on its own (neither a reply nor a subscription update):
//! kept from the moment of connecting, up to a bound, and handed to every listener; a
//! listener that comes later first gets those kept of its type.

use std::collections::VecDeque;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use super::ClientError;

/// The default number of pushes a client keeps for listeners to come.
pub const DEFAULT_PUSH_BACKLOG: usize = 1_000;

/// Who listens for which pushes.
#[derive(Debug)]
pub(super) struct Listener {
    /// Only pushes of this `type`, or every one.
    pub(super) message_type: Option<String>,
    pub(super) sender: mpsc::UnboundedSender<Value>,
}

impl Listener {
    fn wants(&self, message: &Value) -> bool {
        self.message_type.as_deref().map_or(true, |wanted| {
            message.get("type").and_then(Value::as_str) == Some(wanted)
        })
    }
}

/// The kept pushes and the listeners.
pub(super) struct Pushes {
    backlog: VecDeque<Value>,
    limit: usize,
    dropped: u64,
    listeners: Vec<Listener>,
}

impl Pushes {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            backlog: VecDeque::new(),
            limit,
            dropped: 0,
            listeners: Vec::new(),
        }
    }

    /// A new listener: first what is kept of its type, then what comes.
    pub(super) fn listen(&mut self, listener: Listener) {
        for message in self.backlog.iter().filter(|m| listener.wants(m)) {
            let _ = listener.sender.send(message.clone());
        }
        self.listeners.push(listener);
    }

    /// A push from the server: to every listener that wants it, and kept for later ones.
    pub(super) fn receive(&mut self, message: Value) {
        self.listeners
            .retain(|listener| !listener.sender.is_closed());
        for listener in self.listeners.iter().filter(|l| l.wants(&message)) {
            let _ = listener.sender.send(message.clone());
        }
        if self.limit == 0 {
            return;
        }
        if self.backlog.len() == self.limit {
            self.backlog.pop_front();
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(
                    limit = self.limit,
                    dropped = self.dropped,
                    "the client's push backlog is full: the oldest kept pushes are dropped (listeners that exist got them)"
                );
            }
        }
        self.backlog.push_back(message);
    }
}

/// The pushes of one `type`, their `data` decoded as `T` ([`Client::on`](super::Client::on)).
#[derive(Debug)]
pub struct Pushed<T> {
    pub(super) receiver: mpsc::UnboundedReceiver<Value>,
    pub(super) kind: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pushed<T> {
    /// The next push's `data`; `None` once the client is closed. A push whose `data` does
    /// not decode as `T` yields [`ClientError::Decode`], and the next one comes after it.
    pub async fn next(&mut self) -> Option<Result<T, ClientError>> {
        let mut message = self.receiver.recv().await?;
        let data = message
            .as_object_mut()
            .and_then(|fields| fields.remove("data"))
            .unwrap_or(Value::Null);
        Some(
            serde_json::from_value(data).map_err(|error| ClientError::Decode {
                what: "a push's data",
                reason: error.to_string(),
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listener(message_type: Option<&str>) -> (Listener, mpsc::UnboundedReceiver<Value>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let listener = Listener {
            message_type: message_type.map(str::to_owned),
            sender,
        };
        (listener, receiver)
    }

    #[test]
    fn pushes_before_a_listener_are_kept_up_to_the_bound_and_every_listener_gets_them() {
        let mut pushes = Pushes::new(2);
        for n in 1..=3 {
            pushes.receive(json!({"type": "tick", "data": n}));
        }
        pushes.receive(json!({"type": "other"}));
        let (ticks, mut got_ticks) = listener(Some("tick"));
        pushes.listen(ticks);
        let (all, mut got_all) = listener(None);
        pushes.listen(all);
        // The bound kept the last two: tick 3 and other.
        assert_eq!(got_ticks.try_recv().unwrap()["data"], 3);
        assert!(got_ticks.try_recv().is_err());
        assert_eq!(got_all.try_recv().unwrap()["data"], 3);
        assert_eq!(got_all.try_recv().unwrap()["type"], "other");
        pushes.receive(json!({"type": "tick", "data": 4}));
        assert_eq!(got_ticks.try_recv().unwrap()["data"], 4);
        assert_eq!(got_all.try_recv().unwrap()["data"], 4);
        assert_eq!(pushes.dropped, 3);
    }
}
