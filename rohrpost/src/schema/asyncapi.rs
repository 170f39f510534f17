//! The AsyncAPI 3.0 document of a set of handlers, from the client's side: it sends each
//! request and gets its reply, and receives the pushes of the groups it subscribes to.

use std::collections::{BTreeMap, HashMap};

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::{
    Described, HandlerDescription, HandlerSchema, PushSchema, ReplyDescription, Shape,
    SCHEMA_REQUEST,
};
use crate::groups::Position;
use crate::presence::PresenceSnapshot;
use crate::subscribe::{GroupObject, Subscribed};
use crate::Handlers;

/// The one channel's name.
const CHANNEL: &str = "rohrpost";

impl Handlers {
    /// The AsyncAPI 3.0 document of these handlers (the `schema` feature; see
    /// [`schema`](crate::schema)): one channel at `/rohrpost/`; per handler a `send`
    /// operation with its reply; the `{id, type, data}` and `{id, type, error}` envelopes;
    /// the built-in `ping` and, when served, `subscribe`, `unsubscribe` and `presence`; and
    /// a `receive` operation per group type whose changes are pushed. `x-rohrpost` holds
    /// what [`typescript`](crate::schema::typescript) needs, and the types described as any
    /// JSON because they have no `JsonSchema` (`untyped`).
    ///
    /// ```
    /// use rohrpost::Handlers;
    ///
    /// let doc = Handlers::new().asyncapi();
    /// assert_eq!(doc["channels"]["rohrpost"]["address"], "/rohrpost/");
    /// assert_eq!(doc["operations"]["ping"]["action"], "send");
    /// ```
    pub fn asyncapi(&self) -> Value {
        let mut generator = SchemaSettings::draft07()
            .with(|settings| settings.definitions_path = "/components/schemas".into())
            .into_generator();
        let registered: HashMap<&str, &HandlerSchema> = inventory::iter::<HandlerSchema>()
            .flat_map(|entry| entry.names.iter().map(move |name| (*name, entry)))
            .collect();
        let mut doc = Document::default();
        doc.request("ping", &ping());
        let mut names: Vec<&str> = self.names().collect();
        names.sort_unstable();
        for name in names {
            let description = match (registered.get(name), name) {
                (Some(entry), _) => (entry.describe)(&mut generator),
                (None, "subscribe") => subscribe(&mut generator),
                (None, "unsubscribe") => HandlerDescription::new(
                    Some(typed::<GroupObject>(&mut generator)),
                    ReplyDescription::empty().or_error(),
                ),
                (None, "presence") => presence(&mut generator),
                (None, SCHEMA_REQUEST) => HandlerDescription::new(
                    None,
                    ReplyDescription::data(Described {
                        schema: json!({"description": "this AsyncAPI document"}),
                        untyped: None,
                    }),
                ),
                (None, _) => {
                    doc.untyped.push(format!(
                        "`{name}`: a handler registered with Handlers::handler (data and reply are any JSON)"
                    ));
                    HandlerDescription::new(
                        Some(Described::any()),
                        ReplyDescription::data(Described::any()),
                    )
                }
            };
            doc.request(name, &description);
        }
        let mut pushes: Vec<&PushSchema> = inventory::iter::<PushSchema>().collect();
        pushes.sort_by_key(|push| push.group_type);
        for push in pushes {
            let object = (push.describe)(&mut generator);
            doc.push(push.group_type, object);
        }
        doc.finish(generator)
    }

    /// These handlers and the `rohrpost.schema` request, which answers with their AsyncAPI
    /// document (the analogue of OpenRPC's `rpc.discover`; the `schema` feature).
    ///
    /// ```
    /// use rohrpost::Handlers;
    ///
    /// let handlers = Handlers::new().with_schema();
    /// assert!(handlers.names().any(|name| name == "rohrpost.schema"));
    /// ```
    pub fn with_schema(self) -> Self {
        let with = self.handler(SCHEMA_REQUEST, || async { crate::Json(Value::Null) });
        let doc = with.asyncapi();
        // Registered again with the document of the final set, itself included.
        let mut handlers = with;
        handlers.remove(SCHEMA_REQUEST);
        handlers.handler(SCHEMA_REQUEST, move || {
            let doc = doc.clone();
            async move { crate::Json(doc) }
        })
    }
}

fn typed<T: JsonSchema>(generator: &mut SchemaGenerator) -> Described {
    Described {
        schema: generator.subschema_for::<T>().to_value(),
        untyped: None,
    }
}

fn ping() -> HandlerDescription {
    HandlerDescription::new(
        Some(Described::any()),
        ReplyDescription::data(Described::any()).optional(),
    )
}

fn subscribe(generator: &mut SchemaGenerator) -> HandlerDescription {
    let object = typed::<GroupObject>(generator).schema;
    let position = typed::<Position>(generator).schema;
    let data = json!({"allOf": [object, {
        "type": "object",
        "properties": {
            "since": {"description": "resume from this position (null: from now, with positions)", "anyOf": [{"type": "null"}, position]},
            "presence": {"description": "also the group's joins and leaves", "type": "boolean"},
        },
    }]});
    HandlerDescription::new(
        Some(Described {
            schema: data,
            untyped: None,
        }),
        ReplyDescription::data(typed::<Subscribed>(generator)).or_error(),
    )
}

fn presence(generator: &mut SchemaGenerator) -> HandlerDescription {
    let object = typed::<GroupObject>(generator).schema;
    let data = json!({"allOf": [object, {
        "type": "object",
        "properties": {"list": {"description": "false: the counts only", "type": "boolean"}},
    }]});
    HandlerDescription::new(
        Some(Described {
            schema: data,
            untyped: None,
        }),
        ReplyDescription::data(typed::<PresenceSnapshot>(generator)).or_error(),
    )
}

/// The document under construction.
#[derive(Default)]
struct Document {
    messages: BTreeMap<String, Value>,
    operations: BTreeMap<String, Value>,
    requests: Map<String, Value>,
    pushes: Map<String, Value>,
    untyped: Vec<String>,
}

impl Document {
    fn request(&mut self, name: &str, description: &HandlerDescription) {
        let id = message_id(name);
        let mut request = json!({
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"description": "any JSON value; the reply carries it back as sent"},
                "type": {"const": name},
                "auth_jwt": {"type": "string", "description": "a token, for the authorization hook of subscribe"},
            },
        });
        let mut summary = Map::new();
        if let Some(data) = &description.data {
            self.note(name, "data", data);
            request["properties"]["data"] = data.schema.clone();
            if name != "ping" {
                request["required"] = json!(["id", "type", "data"]);
            }
            summary.insert("data".into(), data.schema.clone());
        }
        self.messages.insert(
            id.clone(),
            json!({"name": name, "title": format!("{name} request"), "payload": request}),
        );
        let mut operation = json!({
            "action": "send",
            "channel": {"$ref": format!("#/channels/{CHANNEL}")},
            "messages": [{"$ref": format!("#/channels/{CHANNEL}/messages/{id}")}],
        });
        let reply = &description.reply;
        let reply_type = crate::protocol::reply_type(name);
        let mut forms = Vec::new();
        match &reply.shape {
            Shape::Nothing => {}
            Shape::Empty => {
                forms.push(success(reply_type, None, false));
                summary.insert("reply".into(), Value::Null);
            }
            Shape::Data(data) => {
                self.note(name, "reply", data);
                forms.push(success(reply_type, Some(&data.schema), !reply.optional));
                summary.insert("reply".into(), data.schema.clone());
                if reply.optional {
                    summary.insert("optional".into(), true.into());
                }
            }
        }
        if reply.errors || !matches!(reply.shape, Shape::Nothing) {
            if reply.errors {
                forms.push(json!({
                    "type": "object",
                    "required": ["id", "type", "error"],
                    "properties": {
                        "id": {"description": "the request's id"},
                        "type": {"const": reply_type},
                        "error": {"type": "string"},
                    },
                }));
            }
            let reply_id = format!("{id}.reply");
            let payload = if forms.len() == 1 {
                forms.remove(0)
            } else {
                json!({"oneOf": forms})
            };
            self.messages.insert(
                reply_id.clone(),
                json!({"name": reply_type, "title": format!("{name} reply"), "payload": payload}),
            );
            operation["reply"] = json!({
                "channel": {"$ref": format!("#/channels/{CHANNEL}")},
                "messages": [{"$ref": format!("#/channels/{CHANNEL}/messages/{reply_id}")}],
            });
        }
        self.operations.insert(id, operation);
        self.requests
            .insert(name.to_owned(), Value::Object(summary));
    }

    fn push(&mut self, group_type: &str, object: Described) {
        self.note(group_type, "pushed object", &object);
        let id = format!("subscription-update.{}", message_id(group_type));
        let with_fields = json!({"allOf": [object.schema, {
            "type": "object",
            "properties": {"updated_fields": {"type": "array", "items": {"type": "string"}}},
        }]});
        let payload = json!({
            "type": "object",
            "required": ["id", "type", "data"],
            "properties": {
                "id": {"type": "integer", "description": "a number of the server's own"},
                "type": {"const": "subscription-update"},
                "offset": {"type": "integer", "description": "with `since`: the push's position in the group's stream"},
                "epoch": {"type": "string"},
                "data": {
                    "type": "object",
                    "required": ["type", "group", "object"],
                    "properties": {
                        "type": {"enum": ["create", "update", "delete"]},
                        "group": {"type": "string", "description": format!("`{group_type}-<id>`")},
                        "object": with_fields,
                    },
                },
            },
        });
        self.messages.insert(
            id.clone(),
            json!({"name": "subscription-update", "title": format!("a change to a {group_type}"), "payload": payload}),
        );
        self.operations.insert(
            id.clone(),
            json!({
                "action": "receive",
                "channel": {"$ref": format!("#/channels/{CHANNEL}")},
                "messages": [{"$ref": format!("#/channels/{CHANNEL}/messages/{id}")}],
            }),
        );
        self.pushes.insert(group_type.to_owned(), with_fields);
    }

    /// Lists a part described as any JSON because its type has no `JsonSchema`.
    fn note(&mut self, name: &str, part: &str, described: &Described) {
        if let Some(ty) = described.untyped {
            self.untyped.push(format!(
                "`{name}` {part}: `{ty}` does not implement JsonSchema (any JSON)"
            ));
        }
    }

    fn finish(self, mut generator: SchemaGenerator) -> Value {
        let schemas: Map<String, Value> = generator.take_definitions(true);
        let channel_messages: Map<String, Value> = self
            .messages
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    json!({"$ref": format!("#/components/messages/{id}")}),
                )
            })
            .collect();
        json!({
            "asyncapi": "3.0.0",
            "info": {
                "title": "rohrpost API",
                "version": "1.0.0",
                "description": "JSON messages over one WebSocket, rohrpost's protocol: a request {id, type, data} gets a reply with its id and type, and data or error; subscribers get subscription-update pushes.",
            },
            "defaultContentType": "application/json",
            "channels": {
                CHANNEL: {
                    "address": "/rohrpost/",
                    "messages": channel_messages,
                },
            },
            "operations": self.operations,
            "components": {
                "messages": self.messages,
                "schemas": schemas,
            },
            "x-rohrpost": {
                "requests": self.requests,
                "pushes": self.pushes,
                "untyped": self.untyped,
            },
        })
    }
}

/// The success form of a reply: `{id, type}` and `data` (required unless it may be left out).
fn success(reply_type: &str, data: Option<&Value>, required: bool) -> Value {
    let mut form = json!({
        "type": "object",
        "required": ["id", "type"],
        "properties": {
            "id": {"description": "the request's id"},
            "type": {"const": reply_type},
        },
    });
    if let Some(data) = data {
        form["properties"]["data"] = data.clone();
        if required {
            form["required"] = json!(["id", "type", "data"]);
        }
    }
    form
}

/// A key for a message or an operation: what a JSON pointer or AsyncAPI's key rule does
/// not allow becomes `_`.
fn message_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
