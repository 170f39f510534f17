//! An incoming message as the dispatcher reads it: its `id`, `type` and other top-level
//! fields parsed, its `data` kept as the raw JSON text the client sent, to be decoded once,
//! straight into the handler's [`Data<T>`](crate::Data), without a `serde_json::Value` on
//! the way.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Request;

/// One message that passed the protocol's checks: an object with a string `type` and an
/// `id`.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) id: Value,
    pub(crate) message_type: String,
    /// `data` as sent (`null` included), `None` when the message had none.
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) fields: Map<String, Value>,
}

impl Incoming {
    /// Reads a message in one pass: borrowed keys and type, `data` captured as raw text.
    /// `None` for anything unusual (not an object, a missing or non-string `type`, a
    /// missing `id`, escapes in a key or in the type, a duplicate key whose first value does
    /// not fit): the `Value` parse decides those, with the protocol's exact error replies.
    pub(crate) fn read(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// `data` as a `Value`, for the handlers that take the whole [`Request`]: fails with
    /// serde_json's reason for data a `Value` cannot hold (a number out of range, more than
    /// 128 levels of nesting or more).
    pub(crate) fn data_value(&self) -> Result<Option<Value>, serde_json::Error> {
        self.data
            .as_deref()
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
    }
}

impl From<Request> for Incoming {
    fn from(request: Request) -> Self {
        Self {
            id: request.id,
            message_type: request.message_type,
            // Serializing a `Value` cannot fail.
            data: request
                .data
                .and_then(|data| serde_json::value::to_raw_value(&data).ok()),
            fields: request.fields,
        }
    }
}

impl<'de> Deserialize<'de> for Incoming {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(IncomingVisitor)
    }
}

struct IncomingVisitor;

impl<'de> Visitor<'de> for IncomingVisitor {
    type Value = Incoming;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a rohrpost message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Incoming, A::Error> {
        let mut id = None;
        let mut message_type = None;
        let mut data = None;
        let mut fields = Map::new();
        // As in a `Value`, the last of duplicate keys wins.
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "id" => id = Some(map.next_value::<Value>()?),
                "type" => message_type = Some(map.next_value::<&'de str>()?),
                "data" => data = Some(map.next_value::<Box<RawValue>>()?),
                _ => {
                    fields.insert(key.to_owned(), map.next_value::<Value>()?);
                }
            }
        }
        match (id, message_type) {
            (Some(id), Some(message_type)) => Ok(Incoming {
                id,
                message_type: message_type.to_owned(),
                data,
                fields,
            }),
            _ => Err(de::Error::custom("not a complete message")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_message_with_raw_data() {
        let incoming =
            Incoming::read(r#"{"id":7,"type":"t","data": {"a" : 1},"auth_jwt":"x"}"#).unwrap();
        assert_eq!(incoming.id, Value::from(7));
        assert_eq!(incoming.message_type, "t");
        assert_eq!(incoming.data.unwrap().get(), r#"{"a" : 1}"#);
        assert_eq!(incoming.fields["auth_jwt"], "x");
        let null = Incoming::read(r#"{"id":1,"type":"t","data":null}"#).unwrap();
        assert_eq!(null.data.unwrap().get(), "null");
    }

    #[test]
    fn leaves_the_unusual_to_the_value_parse() {
        for text in [
            "",
            "[]",
            "1",
            r#"{"id":1}"#,
            r#"{"type":"t"}"#,
            r#"{"id":1,"type":7}"#,
            r#"{"id":1,"type":"p\u0069ng"}"#,
            r#"{"id":1,"type":7,"type":"t"}"#,
            r#"{"\u0069d":1,"type":"t"}"#,
            r#"{"id":1,"type":"t"} x"#,
        ] {
            assert!(Incoming::read(text).is_none(), "{text}");
        }
    }

    #[test]
    fn the_last_duplicate_wins_as_in_a_value() {
        let incoming = Incoming::read(r#"{"id":1,"type":"a","id":2,"type":"b"}"#).unwrap();
        assert_eq!(
            (incoming.id, &*incoming.message_type),
            (Value::from(2), "b")
        );
    }
}
