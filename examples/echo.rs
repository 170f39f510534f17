//! A rohrpost server with the built-in `ping` and an `echo` handler.
//!
//! ```text
//! cargo run --example echo                 # listens on 127.0.0.1:8000
//! ROHRPOST_ADDR=0.0.0.0:9000 cargo run --example echo
//! ```
//! Then send `{"id": 1, "type": "echo", "data": {"hello": "world"}}` to
//! `ws://127.0.0.1:8000/rohrpost/` and get `{"id":1,"type":"echo","data":{"hello":"world"}}`.

use rohrpost::prelude::*;

/// Replies with the request's `data`, unchanged.
#[rohrpost_handler("echo")]
async fn echo(req: Request) -> Option<Value> {
    req.data
}

#[path = "common/logging.rs"]
mod logging;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init();
    let addr = std::env::var("ROHRPOST_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let server = Server::bind(addr.as_str()).await?;
    println!("rohrpost echo server listening on {}", server.url());
    server.serve().await;
    Ok(())
}
