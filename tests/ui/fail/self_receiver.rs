use rohrpost::prelude::*;

struct Service;

impl Service {
    #[rohrpost_handler("ping")]
    async fn ping(&self) {}
}

fn main() {}
