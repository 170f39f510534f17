//! The todo demo as its own process, for tests that kill a node (`kill -9`): the same
//! `main` as `cargo run --example todo`, with the same flags.

use clap::Parser;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    rohrpost_todo::init_logging();
    rohrpost_todo::serve(rohrpost_todo::Config::parse()).await
}
