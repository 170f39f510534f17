use rohrpost::notify::Notify;

#[derive(Notify)]
#[rohrpost(group = "todo-{id}")]
struct Todo {
    id: i64,
}

fn main() {}
