//! Procedural macros for [rohrpost](https://docs.rs/rohrpost). Use them through the
//! `rohrpost` crate, which re-exports them: `use rohrpost::rohrpost_handler;`.

use proc_macro::TokenStream;

mod handler;

/// Registers an `async fn` as a rohrpost handler; see `rohrpost::rohrpost_handler`.
#[proc_macro_attribute]
pub fn rohrpost_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
