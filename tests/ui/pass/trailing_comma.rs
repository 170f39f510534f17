use rohrpost::prelude::*;

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

// A trailing comma after the names, and a result with the typed data extractor.
#[rohrpost_handler("add", "sum",)]
async fn add(Data(add): Data<Add>) -> Result<i64, Error> {
    Ok(add.a + add.b)
}

fn main() {}
