use rohrpost::prelude::*;

struct Todo;

#[rohrpost_handler("todo")]
async fn todo() -> Todo {
    Todo
}

fn main() {}
