use rohrpost::prelude::*;

#[rohrpost_handler("ping", pong)]
async fn ping() {}

fn main() {}
