use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping<T: Default>() {}

fn main() {}
