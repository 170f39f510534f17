//! `crate = "path"`: rohrpost reached through another path (renamed or re-exported).

mod shim {
    pub use ::rohrpost::*;
}

use shim::notify::Notify;

#[shim::rohrpost_handler("renamed", crate = "crate::shim")]
async fn renamed(shim::Data(text): shim::Data<String>) -> String {
    text
}

#[shim::rohrpost_handler(crate = "crate::shim")]
async fn by_its_own_name() {}

#[derive(Notify)]
#[rohrpost(crate = "crate::shim", name = "todo")]
struct Todo {
    id: i64,
}

fn main() {
    let todo = Todo { id: 1 };
    assert_eq!(todo.type_name(), "todo");
    let _ = (renamed, by_its_own_name);
}
