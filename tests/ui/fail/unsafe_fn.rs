use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async unsafe fn ping() {}

fn main() {}
