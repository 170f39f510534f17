use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
fn ping() -> i64 {
    1
}

fn main() {}
