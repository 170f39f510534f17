use rohrpost::notify::Notify;

#[derive(Notify)]
#[rohrpost(serialize)]
struct Todo {
    id: i64,
}

fn main() {}
