use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping(_req: &Request) {}

fn main() {}
