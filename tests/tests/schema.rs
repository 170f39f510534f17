//! What `#[rohrpost_handler]` and `#[derive(Notify)]` record with the `schema` feature: the
//! schema of every argument and return form, in the AsyncAPI document and the TypeScript
//! declarations.

use rohrpost::notify::Notify;
use rohrpost::prelude::*;
use schemars::JsonSchema;
use serde_json::json;

#[derive(Serialize, Deserialize, JsonSchema)]
struct Thing {
    id: u64,
    name: String,
}

/// No `JsonSchema`: described as any JSON, and listed.
#[derive(Serialize, Deserialize)]
struct Opaque {
    x: u8,
}

#[derive(Serialize, Deserialize, JsonSchema, Notify)]
#[rohrpost(serialize, name = "gadget")]
struct Gadget {
    id: u64,
    label: String,
}

#[rohrpost_handler("form.json")]
async fn json_reply(Data(thing): Data<Thing>) -> Json<Thing> {
    Json(thing)
}

#[rohrpost_handler("form.plain")]
async fn plain_reply(Data(n): Data<u32>) -> String {
    n.to_string()
}

#[rohrpost_handler("form.result")]
async fn result_reply(Data(thing): Data<Thing>) -> Result<Json<Thing>, Error> {
    Ok(Json(thing))
}

#[rohrpost_handler("form.option")]
async fn option_reply() -> Option<u32> {
    None
}

#[rohrpost_handler("form.unit")]
async fn unit_reply(_conn: Connection) {}

#[rohrpost_handler("form.noreply")]
async fn no_reply(Data(_n): Data<i64>) -> NoReply {
    NoReply
}

#[rohrpost_handler("form.value")]
async fn value_reply(Data(value): Data<Value>) -> Value {
    value
}

#[rohrpost_handler("form.message")]
async fn message_reply(id: RequestId) -> Message {
    Message::success("form.message", id.0)
}

#[rohrpost_handler("form.untyped")]
async fn untyped(Data(opaque): Data<Opaque>) -> Result<Json<Opaque>, Error> {
    Ok(Json(opaque))
}

#[rohrpost_handler("form.result_option")]
async fn result_option() -> Result<Option<String>, Error> {
    Ok(None)
}

fn doc() -> Value {
    Handlers::collect().asyncapi()
}

#[test]
fn every_argument_and_return_form_has_its_schema() {
    let doc = doc();
    let requests = &doc["x-rohrpost"]["requests"];
    let thing = json!({"$ref": "#/components/schemas/Thing"});
    assert_eq!(
        requests["form.json"],
        json!({"data": thing, "reply": thing})
    );
    assert_eq!(requests["form.plain"]["data"]["type"], "integer");
    assert_eq!(requests["form.plain"]["reply"], json!({"type": "string"}));
    assert_eq!(
        requests["form.result"],
        json!({"data": thing, "reply": thing})
    );
    assert_eq!(
        requests["form.option"],
        json!({"reply": {"type": "integer", "format": "uint32", "minimum": 0}, "optional": true})
    );
    assert_eq!(
        requests["form.unit"],
        json!({"reply": null}),
        "no data, no reply data"
    );
    assert_eq!(requests["form.noreply"]["data"]["type"], "integer");
    assert!(requests["form.noreply"].get("reply").is_none(), "no reply");
    assert_eq!(requests["form.value"], json!({"data": true, "reply": {}}));
    assert_eq!(requests["form.message"], json!({"reply": {}}));
    assert_eq!(
        requests["form.result_option"]["reply"],
        json!({"type": "string"})
    );
    assert_eq!(requests["form.result_option"]["optional"], true);
    // The named type, once, in the components.
    assert_eq!(
        doc["components"]["schemas"]["Thing"]["required"],
        json!(["id", "name"])
    );
    // Operations: a send with its reply, the error form only for Result.
    let operations = &doc["operations"];
    assert_eq!(operations["form.json"]["action"], "send");
    assert_eq!(
        operations["form.json"]["reply"]["messages"][0]["$ref"],
        "#/channels/rohrpost/messages/form.json.reply"
    );
    assert!(operations["form.noreply"].get("reply").is_none());
    let messages = &doc["components"]["messages"];
    assert!(messages["form.json.reply"]["payload"]
        .get("oneOf")
        .is_none());
    let forms = messages["form.result.reply"]["payload"]["oneOf"]
        .as_array()
        .expect("success or error");
    assert_eq!(forms[1]["properties"]["error"], json!({"type": "string"}));
    assert_eq!(
        messages["form.json"]["payload"]["properties"]["type"],
        json!({"const": "form.json"})
    );
    assert_eq!(
        messages["ping.reply"]["payload"]["properties"]["type"],
        json!({"const": "pong"})
    );
}

#[test]
fn a_type_without_json_schema_compiles_and_is_listed_as_any() {
    let doc = doc();
    let untyped = &doc["x-rohrpost"]["requests"]["form.untyped"];
    assert!(untyped["data"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("Opaque") && d.contains("does not implement JsonSchema")));
    let listed: Vec<&str> = doc["x-rohrpost"]["untyped"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|entry| entry.contains("schema::Opaque")));
    assert!(listed[0].starts_with("`form.untyped` data"), "{listed:?}");
    let declarations = rohrpost::schema::typescript(&doc);
    assert!(declarations.contains(r#""form.untyped": { data: unknown; reply: unknown };"#));
}

#[test]
fn a_notify_type_with_serialize_describes_its_pushes() {
    let doc = doc();
    let push = &doc["components"]["messages"]["subscription-update.gadget"]["payload"];
    assert_eq!(
        push["properties"]["type"],
        json!({"const": "subscription-update"})
    );
    assert_eq!(
        push["properties"]["data"]["properties"]["object"]["allOf"][0],
        json!({"$ref": "#/components/schemas/Gadget"})
    );
    assert_eq!(
        doc["operations"]["subscription-update.gadget"]["action"],
        "receive"
    );
    let declarations = rohrpost::schema::typescript(&doc);
    assert!(
        declarations.contains("  gadget: Gadget & {\n    updated_fields?: string[];\n  };"),
        "{declarations}"
    );
    assert!(declarations.contains("export type Gadget = {\n  id: number;\n  label: string;\n};"));
}

#[test]
fn the_declarations_map_each_request_to_its_data_and_reply() {
    let declarations = rohrpost::schema::typescript(&doc());
    for line in [
        r#""form.json": { data: Thing; reply: Thing };"#,
        r#""form.option": { data: undefined; reply: number | undefined };"#,
        r#""form.unit": { data: undefined; reply: undefined };"#,
        r#""form.noreply": { data: number; reply: never };"#,
        r#""form.value": { data: unknown; reply: unknown };"#,
        "ping: { data: unknown; reply: unknown | undefined };",
    ] {
        assert!(declarations.contains(line), "{line} in {declarations}");
    }
}
