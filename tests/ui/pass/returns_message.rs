use rohrpost::prelude::*;

// A crate-visible function that returns a whole message.
#[rohrpost_handler("message")]
pub(crate) async fn message(req: Request) -> Message {
    Message::success("done", req.id)
}

fn main() {}
