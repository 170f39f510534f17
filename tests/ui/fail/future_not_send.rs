use std::rc::Rc;

use rohrpost::prelude::*;

#[rohrpost_handler("ping")]
async fn ping() {
    let shared = Rc::new(1);
    tokio::task::yield_now().await;
    drop(shared);
}

fn main() {}
