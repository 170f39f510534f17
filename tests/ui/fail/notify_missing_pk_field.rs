use rohrpost::notify::Notify;

#[derive(Notify)]
#[rohrpost(pk = "slug")]
struct Board {
    id: i64,
}

fn main() {}
