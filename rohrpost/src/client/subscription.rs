//! One subscribed group's updates, decoded.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Client, ClientError, Command};

/// What the driver hands a subscription.
#[derive(Debug)]
pub(super) enum Delivery {
    /// A `subscription-update`'s `data`.
    Update(Value),
    /// After a reconnection the server could not replay what was missed.
    Missed,
}
use crate::notify::Change;

/// One change pushed to a subscribed group.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<T> {
    /// Created, updated or deleted.
    pub change: Change,
    /// The group it was sent to.
    pub group: String,
    /// The pushed object.
    pub object: T,
}

/// What a subscription with presence yields: an update, or a member that came or went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<T> {
    /// An object of the group was created, updated or deleted.
    Update(Update<T>),
    /// A member's first connection joined the group.
    Join(Member),
    /// A member's last connection left the group (after the server's grace for a
    /// disconnect).
    Leave(Member),
}

/// A member of a group with presence, as its join or leave names it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Member {
    /// Its presence id.
    pub id: String,
    /// The info the server gave it (`null` without).
    #[serde(default)]
    pub info: Value,
}

/// The updates of one subscribed group, in order.
pub struct Subscription<T> {
    pub(super) key: u64,
    pub(super) group: String,
    pub(super) updates: mpsc::UnboundedReceiver<Delivery>,
    pub(super) client: Client,
    pub(super) kind: PhantomData<fn() -> T>,
}

/// A `subscription-update`'s `data`, as the server sends it.
#[derive(Deserialize)]
struct UpdateData<T> {
    #[serde(rename = "type")]
    change: Change,
    group: String,
    object: T,
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The group's name, as the server confirmed it.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next update; `None` once the client is closed or the group unsubscribed.
    ///
    /// After a reconnection the client re-subscribes from the last position it saw, and the
    /// server replays what was missed for groups that keep a history. When it could not
    /// (no history, or too much missed), this yields [`ClientError::Missed`] once: refetch
    /// the state, then go on reading updates.
    ///
    /// Joins and leaves (for a subscription with presence) are skipped: read them with
    /// [`next_event`](Self::next_event).
    ///
    /// ```no_run
    /// use rohrpost::client::{group_object, Client, ClientError};
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Todo { id: i64, title: String }
    ///
    /// # async fn run(client: Client) -> Result<(), ClientError> {
    /// let mut todos = Vec::<Todo>::new();
    /// let mut changes = client.subscribe::<Todo>(group_object("todo", 1)).await?;
    /// while let Some(update) = changes.next().await {
    ///     match update {
    ///         Ok(update) => println!("{:?}", update),
    ///         // Offline too long, or no history: what was missed is unknown.
    ///         Err(ClientError::Missed { .. }) => todos = client.call_as("todo.list", ()).await?,
    ///         Err(error) => return Err(error),
    ///     }
    /// }
    /// # let _ = todos;
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Result<Update<T>, ClientError>> {
        loop {
            match self.next_event().await? {
                Ok(Event::Update(update)) => return Some(Ok(update)),
                Ok(_) => continue,
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// The next update, join or leave; `None` once the client is closed or the group
    /// unsubscribed. Errors as for [`next`](Self::next).
    pub async fn next_event(&mut self) -> Option<Result<Event<T>, ClientError>> {
        match self.updates.recv().await? {
            Delivery::Update(data) => Some(decode_event(data)),
            Delivery::Missed => Some(Err(ClientError::Missed {
                group: self.group.clone(),
            })),
        }
    }

    /// Unsubscribes (when offline, the group is just forgotten). Dropping the
    /// subscription does the same.
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let _ = self.client.command(Command::Unsubscribe {
            key: self.key,
            group: self.group.clone(),
        });
    }
}

fn decode_event<T: DeserializeOwned>(data: Value) -> Result<Event<T>, ClientError> {
    let kind = data.get("type").and_then(Value::as_str);
    if let Some(kind @ ("join" | "leave")) = kind {
        let join = kind == "join";
        let member = data
            .get("object")
            .cloned()
            .map(serde_json::from_value::<Member>)
            .transpose()
            .ok()
            .flatten()
            .ok_or_else(|| ClientError::Decode {
                what: "a presence event",
                reason: format!("no member `{{id, info}}` in {data}"),
            })?;
        return Ok(if join {
            Event::Join(member)
        } else {
            Event::Leave(member)
        });
    }
    decode_update(data).map(Event::Update)
}

fn decode_update<T: DeserializeOwned>(data: Value) -> Result<Update<T>, ClientError> {
    let update: UpdateData<T> = serde_json::from_value(data).map_err(|e| ClientError::Decode {
        what: "a subscription update",
        reason: e.to_string(),
    })?;
    Ok(Update {
        change: update.change,
        group: update.group,
        object: update.object,
    })
}

impl<T> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_decodes_its_change_group_and_object() {
        let data = json!({"type": "update", "group": "todo-1", "object": {"id": 1}});
        let update: Update<Value> = decode_update(data).unwrap();
        assert_eq!(update.change, Change::Update);
        assert_eq!(update.group, "todo-1");
        assert_eq!(update.object, json!({"id": 1}));
        let unknown = decode_update::<Value>(json!({"type": "moved", "group": "g", "object": 1}));
        assert!(
            matches!(unknown, Err(ClientError::Decode { .. })),
            "{unknown:?}"
        );
    }

    #[test]
    fn joins_and_leaves_decode_as_members() {
        let join = json!({"type": "join", "group": "todo-1", "object": {"id": "u7", "info": {"user": "u7"}}});
        assert_eq!(
            decode_event::<Value>(join).unwrap(),
            Event::Join(Member {
                id: "u7".into(),
                info: json!({"user": "u7"})
            })
        );
        let leave = json!({"type": "leave", "group": "todo-1", "object": {"id": "u7"}});
        assert_eq!(
            decode_event::<Value>(leave).unwrap(),
            Event::Leave(Member {
                id: "u7".into(),
                info: Value::Null
            })
        );
        let broken = json!({"type": "join", "group": "todo-1", "object": 5});
        assert!(matches!(
            decode_event::<Value>(broken),
            Err(ClientError::Decode { .. })
        ));
    }
}
