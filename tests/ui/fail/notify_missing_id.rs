use rohrpost::notify::Notify;

#[derive(Notify)]
struct Todo {
    key: i64,
}

fn main() {}
