use rohrpost::notify::Notify;

#[derive(Notify)]
#[rohrpost(serializer)]
struct Todo {
    id: i64,
}

fn main() {}
