use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping(_req: impl Into<Request>) {}

fn main() {}
