//! The chat example: `cargo run --example chat`, then connect to
//! `ws://127.0.0.1:8000/rohrpost/?user=ada` (`ROHRPOST_ADDR` changes the address). The wire
//! is in `examples/chat/src/lib.rs`.

#[path = "common/logging.rs"]
mod logging;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logging::init();
    let addr = std::env::var("ROHRPOST_ADDR").unwrap_or_else(|_| "127.0.0.1:8000".into());
    rohrpost_chat::serve(&addr).await
}
