use rohrpost::prelude::*;

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[rohrpost_handler("ping", "echo")]
async fn ping(req: Request) -> Option<Value> {
    req.data
}

#[rohrpost_handler("add", "sum",)]
async fn add(Data(add): Data<Add>) -> Result<i64, Error> {
    Ok(add.a + add.b)
}

#[rohrpost_handler]
async fn no_names_uses_the_function_name() {}

pub struct Config;

#[rohrpost_handler("everything")]
pub async fn everything(
    _req: Request,
    _conn: Connection,
    _id: RequestId,
    _config: State<Config>,
    Data(_value): Data<Value>,
) -> Result<NoReply, Error> {
    Ok(NoReply)
}

#[rohrpost_handler("message")]
pub(crate) async fn message(req: Request) -> Message {
    Message::success("done", req.id)
}

fn main() {
    // The function stays callable as it was written.
    let _ = no_names_uses_the_function_name();
}
