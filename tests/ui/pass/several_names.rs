use rohrpost::prelude::*;

// One function under two message types.
#[rohrpost_handler("ping", "echo")]
async fn ping(req: Request) -> Option<Value> {
    req.data
}

fn main() {}
