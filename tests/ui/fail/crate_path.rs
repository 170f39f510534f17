use rohrpost::prelude::*;

// A path that does not lead to rohrpost: reported at the string.
#[rohrpost_handler("a", crate = "::not_rohrpost")]
async fn unknown_path() {}

// Not a string.
#[rohrpost_handler("b", crate = rohrpost)]
async fn not_a_string() {}

// Given twice.
#[rohrpost_handler("c", crate = "::rohrpost", crate = "::rohrpost")]
async fn twice() {}

#[derive(rohrpost::notify::Notify)]
#[rohrpost(crate = "not a path")]
struct Todo {
    id: i64,
}

fn main() {}
