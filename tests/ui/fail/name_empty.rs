use rohrpost::prelude::*;

#[rohrpost_handler("ping", "")]
async fn ping() {}

fn main() {}
