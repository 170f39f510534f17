use rohrpost::notify::Notify;

// The same option twice, in two attributes: the second is reported, not silently used.
#[derive(Notify)]
#[rohrpost(pk = "id", name = "todo")]
#[rohrpost(pk = "key")]
struct Todo {
    id: i64,
    key: i64,
}

fn main() {}
