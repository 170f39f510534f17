//! The global registry: names from the attribute or the function, and duplicates across
//! modules as a start-up error.

use rohrpost::prelude::*;
use rohrpost::server::DuplicateHandler;

mod first {
    use rohrpost::prelude::*;

    #[rohrpost_handler("dup")]
    pub(crate) async fn claims_dup() {}
}

mod second {
    use rohrpost::prelude::*;

    #[rohrpost_handler("other", "dup")]
    pub(crate) async fn also_claims_dup() {}
}

#[rohrpost_handler]
async fn own_name() {}

#[rohrpost_handler]
async fn r#match() {}

#[test]
fn names_come_from_the_attribute_or_the_function() {
    let handlers = Handlers::collect();
    let mut names: Vec<_> = handlers.names().collect();
    names.sort_unstable();
    assert_eq!(names, ["dup", "match", "other", "own_name"]);
}

#[test]
fn a_name_claimed_by_two_functions_is_reported_with_both() {
    let DuplicateHandler {
        name,
        first,
        second,
    } = Handlers::collect()
        .check()
        .expect_err("dup is defined twice");
    assert_eq!(name, "dup");
    let mut functions = [first, second];
    functions.sort();
    assert_eq!(
        functions,
        [
            "registry::first::claims_dup".to_owned(),
            "registry::second::also_claims_dup".to_owned()
        ]
    );
}

#[tokio::test]
async fn the_server_refuses_to_start_with_a_duplicate() {
    let error = Server::bind("127.0.0.1:0")
        .await
        .expect_err("dup is defined twice");
    let message = error.to_string();
    assert!(
        message.starts_with("Handler for \"dup\" is already defined: by `registry::"),
        "{message}"
    );
    assert!(
        message.contains("`registry::first::claims_dup`"),
        "{message}"
    );
    assert!(
        message.contains("`registry::second::also_claims_dup`"),
        "{message}"
    );
}
