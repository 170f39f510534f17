use rohrpost::prelude::*;

// Without names the function's own name is the message type.
#[rohrpost_handler]
async fn no_names_uses_the_function_name() {}

fn main() {
    // The function stays callable as it was written.
    let _ = no_names_uses_the_function_name();
}
