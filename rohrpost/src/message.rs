//! Requests, outgoing messages and their JSON form.
//!
//! The rules here are the original's `rohrpost.message` helpers (`send_message`,
//! `send_success`, `send_error`), with its truthiness quirk fixed: every value that was
//! given is kept, `0` and `""` ids and empty `data` objects included.

use serde::Serialize;
use serde_json::{Map, Value};
use thiserror::Error;

/// One incoming message: a JSON object with an `id`, a `type` and, optionally, `data`.
///
/// Every other top-level field (rohrpost.js sends `auth_jwt` beside `data`) is kept in
/// [`fields`](Request::fields). Take a `Request` as a handler argument to see all of it.
///
/// ```
/// use rohrpost::prelude::*;
///
/// #[rohrpost_handler("whoami")]
/// async fn whoami(req: Request) -> Value {
///     json!({ "token": req.fields.get("auth_jwt"), "asked_with": req.id })
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request's id, any JSON value; replies echo it unchanged.
    pub id: Value,
    /// The message type: the handler's name.
    pub message_type: String,
    /// The `data` field, when the message had one.
    pub data: Option<Value>,
    /// Every other top-level field of the message.
    pub fields: Map<String, Value>,
}

/// A message to send to a client: any of `id`, `type`, `data` and `error`.
///
/// Fields that were not set are left out of the JSON; fields that were set are kept, whatever
/// their value (an id of `0` or `""`, an empty `data` object). A message with no field at all
/// cannot be sent ([`EmptyMessage`]).
///
/// ```
/// use rohrpost::Message;
/// use serde_json::json;
///
/// // send_success(handler, message_id, data)
/// let ok = Message::success("todo.create", 3).with_data(json!({"id": 1}));
/// assert_eq!(ok.to_json().unwrap(), r#"{"id":3,"type":"todo.create","data":{"id":1}}"#);
///
/// // send_error(handler?, message_id?, error, data?)
/// let denied = Message::error("ACCESS_DENIED").with_id(4).with_type("subscribe");
/// assert_eq!(denied.to_json().unwrap(), r#"{"id":4,"type":"subscribe","error":"ACCESS_DENIED"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Value>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    message_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// A message with no field at all was to be sent (the original's `send_message` rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("Cannot send an empty message.")]
pub struct EmptyMessage;

impl Message {
    /// A message with no fields yet (the original's `send_message`): set them with the
    /// `with_*` methods. Sending it as it is fails with [`EmptyMessage`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A success reply (the original's `send_success`): both the type and the id are
    /// required, which the signature makes impossible to forget.
    pub fn success(message_type: impl Into<String>, id: impl Into<Value>) -> Self {
        Self::new().with_type(message_type).with_id(id)
    }

    /// A push: a message of `message_type` with `data` and no `id`, for messages the
    /// server sends on its own (to a group, or on connect). `data` is anything
    /// serializable; it fails only where serde_json would (a map with non-string keys).
    ///
    /// For your own clients only: rohrpost.js takes a message of a type it does not know,
    /// without an id, for a reply to an unknown request and emits `'error'`. To reach
    /// rohrpost.js subscribers, send `subscription-update` to their groups instead.
    ///
    /// ```
    /// use rohrpost::Message;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Said<'a> { room: &'a str, user: &'a str, text: &'a str }
    ///
    /// let push = Message::push("chat.message", &Said { room: "rust", user: "ada", text: "hi" })?;
    /// // The data goes through a `serde_json::Value`: its keys come out sorted.
    /// assert_eq!(
    ///     push.to_json()?,
    ///     r#"{"type":"chat.message","data":{"room":"rust","text":"hi","user":"ada"}}"#
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(
        message_type: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new()
            .with_type(message_type)
            .with_data(serde_json::to_value(data)?))
    }

    /// An error message (the original's `send_error`): the error is required, the type, id
    /// and data may be added.
    pub fn error(error: impl Into<Value>) -> Self {
        Self {
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// Sets the `id`.
    pub fn with_id(mut self, id: impl Into<Value>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the `type`.
    pub fn with_type(mut self, message_type: impl Into<String>) -> Self {
        self.message_type = Some(message_type.into());
        self
    }

    /// Sets the `data`. Use [`serde_json::to_value`] or [`serde_json::json!`] to build it from
    /// any serializable value.
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Sets the `error`: usually a string, but any JSON value is allowed.
    pub fn with_error(mut self, error: impl Into<Value>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// The `id`, if set.
    pub fn id(&self) -> Option<&Value> {
        self.id.as_ref()
    }

    /// The `type`, if set.
    pub fn message_type(&self) -> Option<&str> {
        self.message_type.as_deref()
    }

    /// The `data`, if set.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// The `error`, if set.
    pub fn error_value(&self) -> Option<&Value> {
        self.error.as_ref()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.message_type.is_none()
            && self.data.is_none()
            && self.error.is_none()
    }

    /// The message as the JSON text of one frame.
    pub fn to_json(&self) -> Result<String, EmptyMessage> {
        if self.is_empty() {
            return Err(EmptyMessage);
        }
        // A struct of strings and `Value`s always serializes.
        Ok(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Writes `{"id":…,"type":…,"data":…}` straight into one buffer, without building a `Value`
/// for the data first. Data that serializes to `null` is left out, so that a handler
/// returning `()` or `None` replies with `{"id":…,"type":…}`.
pub(crate) fn reply_json<T: Serialize + ?Sized>(
    id: &Value,
    message_type: &str,
    data: &T,
) -> Result<String, serde_json::Error> {
    let mut out = head(id, message_type);
    let without_data = out.len();
    out.extend_from_slice(br#","data":"#);
    let data_start = out.len();
    serde_json::to_writer(&mut out, data)?;
    if &out[data_start..] == b"null" {
        out.truncate(without_data);
    }
    out.push(b'}');
    Ok(into_text(out))
}

/// `{"id":…,"type":…,"error":"…"}`, written straight into one buffer.
pub(crate) fn error_json(id: &Value, message_type: &str, error: &str) -> String {
    let mut out = head(id, message_type);
    out.extend_from_slice(br#","error":"#);
    write_value(&mut out, error);
    out.push(b'}');
    into_text(out)
}

fn head(id: &Value, message_type: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message_type.len());
    out.extend_from_slice(br#"{"id":"#);
    write_value(&mut out, id);
    out.extend_from_slice(br#","type":"#);
    write_value(&mut out, message_type);
    out
}

fn write_value<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and `Value`s (whose map keys are strings) cannot fail to serialize, and
    // writing to a Vec cannot fail either.
    let _ = serde_json::to_writer(out, value);
}

fn into_text(bytes: Vec<u8>) -> String {
    // serde_json writes UTF-8 only; the check is a cheap guard, not a conversion.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `frame` (a JSON object) with the members of `set` (raw JSON values) put in or replaced,
/// the others kept as they are, in the order `id, type, offset, epoch, data, error`, then
/// any others: the order [`Message`] writes, with the extension keys before `data`. `None`
/// when `frame` is not a JSON object.
pub(crate) fn rewrite_frame(frame: &str, set: &[(&str, &str)]) -> Option<String> {
    use std::collections::BTreeMap;
    let mut fields: BTreeMap<String, &str> =
        serde_json::from_str::<BTreeMap<String, &serde_json::value::RawValue>>(frame)
            .ok()?
            .into_iter()
            .map(|(key, value)| (key, value.get()))
            .collect();
    for (key, value) in set {
        fields.insert((*key).to_owned(), value);
    }
    let mut out = String::with_capacity(frame.len() + 40);
    out.push('{');
    let mut write = |key: &str, value: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).unwrap_or_default());
        out.push(':');
        out.push_str(value);
    };
    for key in ["id", "type", "offset", "epoch", "data", "error"] {
        if let Some(value) = fields.remove(key) {
            write(key, value);
        }
    }
    for (key, value) in &fields {
        write(key, value);
    }
    out.push('}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_message_cannot_be_sent() {
        assert_eq!(Message::new().to_json(), Err(EmptyMessage));
        assert_eq!(EmptyMessage.to_string(), "Cannot send an empty message.");
    }

    #[test]
    fn falsy_values_are_kept() {
        let m = Message::success("x", 0).with_data(json!({}));
        assert_eq!(m.to_json().unwrap(), r#"{"id":0,"type":"x","data":{}}"#);
        let m = Message::success("", "");
        assert_eq!(m.to_json().unwrap(), r#"{"id":"","type":""}"#);
    }

    #[test]
    fn reply_leaves_out_null_data() {
        assert_eq!(
            reply_json(&json!(1), "t", &()).unwrap(),
            r#"{"id":1,"type":"t"}"#
        );
        assert_eq!(
            reply_json(&json!(1.5), "t", &Some(0)).unwrap(),
            r#"{"id":1.5,"type":"t","data":0}"#
        );
    }

    #[test]
    fn a_rewritten_frame_keeps_its_members_in_messages_order() {
        let frame = r#"{"id":7,"type":"t","data":{"z":1,"a":2},"extra":true}"#;
        assert_eq!(
            rewrite_frame(frame, &[("offset", "3"), ("epoch", r#""e""#)]).unwrap(),
            r#"{"id":7,"type":"t","offset":3,"epoch":"e","data":{"z":1,"a":2},"extra":true}"#
        );
        assert_eq!(
            rewrite_frame(frame, &[("data", "null")]).unwrap(),
            r#"{"id":7,"type":"t","data":null,"extra":true}"#
        );
        assert_eq!(rewrite_frame("[1]", &[]), None);
    }
}
