//! Procedural macros for [rohrpost](https://docs.rs/rohrpost). Use them through the
//! `rohrpost` crate, which re-exports them: `use rohrpost::rohrpost_handler;`.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod handler;
mod notify;

/// The path to the rohrpost crate in generated code, spanned where the code it starts is
/// reported: `::rohrpost`, or the alias [`crate_alias`] makes of the user's `crate = "path"`.
fn krate(path: Option<&syn::Path>, span: proc_macro2::Span) -> proc_macro2::TokenStream {
    match path {
        Some(_) => quote::quote_spanned!(span=> __rohrpost_crate),
        None => quote::quote_spanned!(span=> ::rohrpost),
    }
}

/// `use path as __rohrpost_crate;` for a `crate = "path"`, so that a path that does not
/// resolve is reported once, at the string; nothing for the default.
fn crate_alias(path: Option<&syn::Path>) -> proc_macro2::TokenStream {
    match path {
        Some(path) => {
            let span = syn::spanned::Spanned::span(path);
            quote::quote_spanned!(span=> use #path as __rohrpost_crate;)
        }
        None => proc_macro2::TokenStream::new(),
    }
}

/// Registers an `async fn` as a rohrpost handler; see `rohrpost::rohrpost_handler`.
#[proc_macro_attribute]
pub fn rohrpost_handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Implements `rohrpost::notify::Notify`; see `rohrpost::notify::Notify` (the derive).
#[proc_macro_derive(Notify, attributes(rohrpost))]
pub fn derive_notify(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    notify::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
