//! Procedural macros for [rohrpost](https://docs.rs/rohrpost). Use them through the
//! `rohrpost` crate, which re-exports them: `use rohrpost::rohrpost_handler;`.

use proc_macro::TokenStream;

mod handler;
mod notify;

/// The path to the rohrpost crate in generated code: `::rohrpost`, spanned where the code
/// it starts is reported, or the user's `crate = "path"`.
fn krate(path: Option<&syn::Path>, span: proc_macro2::Span) -> proc_macro2::TokenStream {
    match path {
        Some(path) => quote::quote!(#path),
        None => quote::quote_spanned!(span=> ::rohrpost),
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
