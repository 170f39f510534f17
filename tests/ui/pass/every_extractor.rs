use rohrpost::prelude::*;

pub struct Config;

// Every extractor at once, a public function, and a result of no reply.
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

fn main() {}
