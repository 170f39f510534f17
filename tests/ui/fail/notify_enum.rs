use rohrpost::notify::Notify;

#[derive(Notify)]
enum Change {
    Created,
}

fn main() {}
