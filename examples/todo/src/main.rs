//! The todo demo as a binary: `cargo run -p rohrpost-todo` (or `cargo run --example todo`).

use clap::Parser;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rohrpost_todo::init_logging();
    rohrpost_todo::serve(rohrpost_todo::Config::parse()).await
}
