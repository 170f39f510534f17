//! The per-message path without a network: one text frame → parse → dispatch → reply text,
//! against two hand-written versions of the same work: one through a `serde_json::Value`,
//! one that borrows the type and keeps the id and `data` as raw text (`RawValue`).
//!
//! `cargo bench -p rohrpost --bench dispatch`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Map, Value};
use std::hint::black_box;

/// What a careful hand-written server does: parse into a `Value`, check the fields, build
/// the reply as a `Value`, serialize it.
fn by_hand(text: &str) -> String {
    let Ok(Value::Object(mut request)) = serde_json::from_str::<Value>(text) else {
        return json!({"error": "bad"}).to_string();
    };
    let id = request.remove("id").unwrap_or(Value::Null);
    let kind = request.remove("type").unwrap_or(Value::Null);
    let mut reply = Map::new();
    reply.insert("id".into(), id);
    match (kind.as_str(), request.remove("data")) {
        (Some("ping"), data) => {
            reply.insert("type".into(), "pong".into());
            if let Some(data) = data {
                let data = if data.is_object() {
                    data
                } else {
                    json!({"data": data})
                };
                reply.insert("data".into(), data);
            }
        }
        (Some(other), data) => {
            reply.insert("type".into(), other.into());
            if let Some(data) = data {
                reply.insert("data".into(), data);
            }
        }
        (None, _) => {
            reply.insert("error".into(), "bad type".into());
        }
    }
    Value::Object(reply).to_string()
}

/// What the best hand-written server does: borrow the type, keep the id and `data` as the
/// raw text the client sent, and write the reply around them (no `Value` at all).
fn by_hand_borrowed(text: &str) -> String {
    use serde_json::value::RawValue;

    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let Ok(request) = serde_json::from_str::<Request<'_>>(text) else {
        return r#"{"error":"bad"}"#.to_owned();
    };
    let mut reply = String::with_capacity(text.len() + 32);
    reply.push_str(r#"{"id":"#);
    reply.push_str(request.id.get());
    reply.push_str(r#","type":"#);
    let kind = if request.kind == "ping" {
        "pong"
    } else {
        &request.kind
    };
    reply.push_str(&serde_json::to_string(kind).unwrap_or_default());
    if let Some(data) = request.data {
        reply.push_str(r#","data":"#);
        if request.kind == "ping" && !data.get().starts_with('{') {
            reply.push_str(r#"{"data":"#);
            reply.push_str(data.get());
            reply.push('}');
        } else {
            reply.push_str(data.get());
        }
    }
    reply.push('}');
    reply
}

fn dispatch(c: &mut Criterion) {
    let inputs = [
        ("ping", r#"{"id":7,"type":"ping"}"#.to_owned()),
        ("ping_data", r#"{"id":7,"type":"ping","data":{"x":1}}"#.to_owned()),
        // A typed handler: `Data<Todo>` in, `Json<Todo>` out (the same bytes as an echo).
        ("typed_small", r#"{"id":7,"type":"todo","data":{"title":"milk","done":false}}"#.to_owned()),
        // `Data<Box<RawValue>>` relayed as it came.
        (
            "relay_4k",
            json!({"id": 7, "type": "relay", "data": {"items": (0..200).map(|n| json!({"n": n, "s": "abcdefgh"})).collect::<Vec<_>>()}})
                .to_string(),
        ),
        // A handler that takes the whole `Request`: its data becomes a `Value`.
        ("request_small", r#"{"id":7,"type":"echo","data":{"title":"milk","done":false}}"#.to_owned()),
        ("unknown_type", r#"{"id":7,"type":"nope"}"#.to_owned()),
    ];
    let mut group = c.benchmark_group("per_message");
    for (name, text) in &inputs {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("rohrpost", name), text, |b, text| {
            b.iter(|| rohrpost::__private::dispatch_detached(black_box(text)))
        });
        group.bench_with_input(
            BenchmarkId::new("serde_json_value", name),
            text,
            |b, text| b.iter(|| by_hand(black_box(text))),
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_borrowed", name),
            text,
            |b, text| b.iter(|| by_hand_borrowed(black_box(text))),
        );
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
