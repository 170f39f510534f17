//! Subscribes to a todo of the todo demo and prints its changes while another process edits
//! it.
//!
//! ```text
//! cargo run --example todo                  # terminal 1: the server
//! cargo run --example client -- 1           # terminal 2: watch todo 1 (creates it if needed)
//! # terminal 3: edit it, e.g. with another client or the browser page
//! ```
//! `ROHRPOST_URL` (default `ws://127.0.0.1:8000/rohrpost/`) and `ROHRPOST_TOKEN`
//! (default `hunter2`) say where and how.

use rohrpost::client::{group_object, Client, ConnectionState};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Deserialize)]
struct Todo {
    id: i64,
    title: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("ROHRPOST_URL").unwrap_or_else(|_| "ws://127.0.0.1:8000/rohrpost/".into());
    let token = std::env::var("ROHRPOST_TOKEN").unwrap_or_else(|_| "hunter2".into());
    let id: i64 = match std::env::args().nth(1) {
        Some(id) => id.parse()?,
        None => {
            let client = Client::builder(url.as_str())
                .token(token.as_str())
                .connect()
                .await?;
            let todo: Todo = client
                .call_as("todo.create", json!({"title": "watched"}))
                .await?;
            println!("created todo {} ({:?})", todo.id, todo.title);
            todo.id
        }
    };
    let client = Client::builder(url.as_str()).token(token).connect().await?;
    let mut changes = client.subscribe::<Todo>(group_object("todo", id)).await?;
    println!("watching {} on {url}; edit it elsewhere", changes.group());
    let mut state = client.state_changes();
    loop {
        tokio::select! {
            update = changes.next() => match update {
                Some(Ok(update)) => println!("{:?}: {} {:?}", update.change, update.object.id, update.object.title),
                Some(Err(error)) => eprintln!("an update did not decode: {error}"),
                None => break,
            },
            Ok(()) = state.changed() => {
                let now = *state.borrow();
                println!("connection: {now:?}");
                if now == ConnectionState::Closed {
                    break;
                }
            }
        }
    }
    Ok(())
}
