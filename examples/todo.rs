//! The todo demo: `cargo run --example todo`, then open http://127.0.0.1:8000/ in a browser
//! (two tabs show each other's changes live), or a WebSocket to
//! `ws://127.0.0.1:8000/rohrpost/`.
//!
//! ```text
//! {"id": 1, "type": "subscribe", "auth_jwt": "hunter2", "data": {"type": "todo", "id": 1}}
//! {"id": 2, "type": "todo.create", "data": {"title": "milk"}}
//! {"id": 3, "type": "todo.update", "data": {"id": 1, "title": "oat milk"}}
//! {"id": 4, "type": "todo.delete", "data": {"id": 1}}
//! ```
//! Settings: `--addr`/`ROHRPOST_ADDR` (127.0.0.1:8000), `--token`/`ROHRPOST_TOKEN`
//! (hunter2), `--database-url`/`DATABASE_URL` (an SQLite file `todo.sqlite` here),
//! `--redis-url`/`ROHRPOST_REDIS_URL` (none: groups in this process only).

use clap::Parser;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rohrpost_todo::init_logging();
    rohrpost_todo::serve(rohrpost_todo::Config::parse()).await
}
