use rohrpost::notify::{Change, Notify};
use serde_json::{json, Value};

// A data function may push part of the object: conflating its updates would lose fields.
#[derive(Notify)]
#[rohrpost(data = "partial", conflate)]
struct Todo {
    id: i64,
    title: String,
}

fn partial(todo: &Todo, _: Option<&[&str]>, _: Change) -> Value {
    json!({ "title": todo.title })
}

fn main() {}
