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

#[derive(rohrpost::notify::Notify)]
#[rohrpost(crate = "::rohrpost", crate = "::rohrpost")]
struct Twice {
    id: i64,
}

mod shim {
    pub use ::rohrpost::*;
}

// Through a crate path, an argument that is not an extractor is still reported at its type.
#[rohrpost_handler("d", crate = "crate::shim")]
async fn not_extractable(number: u32) -> u32 {
    number
}

fn main() {}
