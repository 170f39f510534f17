use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping(_req: Request, _count: u32) {}

fn main() {}
