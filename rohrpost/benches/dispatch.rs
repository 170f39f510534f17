//! The per-message path without a network: one text frame → parse → dispatch → reply text,
//! against a hand-written `serde_json::Value` version of the same work.
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

fn dispatch(c: &mut Criterion) {
    let inputs = [
        ("ping", r#"{"id":7,"type":"ping"}"#.to_owned()),
        ("echo_small", r#"{"id":7,"type":"echo","data":{"title":"milk","done":false}}"#.to_owned()),
        (
            "echo_4k",
            json!({"id": 7, "type": "echo", "data": {"items": (0..200).map(|n| json!({"n": n, "s": "abcdefgh"})).collect::<Vec<_>>()}})
                .to_string(),
        ),
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
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
