use rohrpost::prelude::*;

#[rohrpost_handler("ping", "echo", "ping")]
async fn ping() {}

fn main() {}
