//! `#[rohrpost_handler]`: parse the names and the function, validate, expand.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, Path, ReturnType, Token, Type};

/// More arguments than this and the call would be unreadable anyway.
const MAX_ARGUMENTS: usize = 12;

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let function: ItemFn = syn::parse2(item)?;
    let (names, krate) = parse_args(args, &function)?;
    validate(&function)?;
    Ok(generate(&function, &names, krate.as_ref()))
}

/// The message types (string literals, or the function's own name when none are given) and
/// the `crate = "path"` option.
fn parse_args(args: TokenStream, function: &ItemFn) -> syn::Result<(Vec<LitStr>, Option<Path>)> {
    let exprs = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(args)?;
    let mut krate = None;
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(exprs.len());
    for expr in exprs {
        let name = match expr {
            Expr::Lit(ExprLit {
                lit: Lit::Str(name),
                ..
            }) => name,
            Expr::Assign(assign) if is_crate_keyword(&assign.left) => {
                if krate.is_some() {
                    return Err(syn::Error::new_spanned(
                        assign.left,
                        "`crate` is given twice",
                    ));
                }
                krate = Some(crate_path(&assign.right)?);
                continue;
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "a handler name must be a string literal, like `\"ping\"` \
                     (the one option is `crate = \"path\"`)",
                ))
            }
        };
        let value = name.value();
        if value.is_empty() {
            return Err(syn::Error::new(
                name.span(),
                "a handler name cannot be empty",
            ));
        }
        if !seen.insert(value.clone()) {
            return Err(syn::Error::new(
                name.span(),
                format!("the handler name \"{value}\" is listed twice"),
            ));
        }
        names.push(name);
    }
    if names.is_empty() {
        let ident = &function.sig.ident;
        let name = ident.to_string();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        names.push(LitStr::new(name, ident.span()));
    }
    Ok((names, krate))
}

fn is_crate_keyword(expr: &Expr) -> bool {
    matches!(expr, Expr::Path(path) if path.qself.is_none() && path.path.is_ident("crate"))
}

/// The path of `crate = "path"`: where the `rohrpost` crate is, when it was renamed or is
/// re-exported.
fn crate_path(value: &Expr) -> syn::Result<Path> {
    let wrong = || {
        syn::Error::new_spanned(
            value,
            "`crate` takes the path to rohrpost as a string, like `crate = \"::my_rohrpost\"`",
        )
    };
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(path),
            ..
        }) => path.parse().map_err(|_| wrong()),
        _ => Err(wrong()),
    }
}

/// Everything the runtime cannot call, reported at the token at fault.
fn validate(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "a rohrpost handler cannot be a `const fn`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(syn::Error::new(
            unsafety.span(),
            "a rohrpost handler cannot be an `unsafe fn`",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(syn::Error::new(
            abi.span(),
            "a rohrpost handler cannot have an `extern` ABI",
        ));
    }
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            "rohrpost handlers must be `async fn`s",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a rohrpost handler cannot be generic: the runtime must know its argument types",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "a rohrpost handler cannot be variadic",
        ));
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "a rohrpost handler cannot take `self`: write a free `async fn`",
                ))
            }
            FnArg::Typed(arg) => validate_argument_type(&arg.ty)?,
        }
    }
    if let Some(extra) = sig.inputs.iter().nth(MAX_ARGUMENTS) {
        return Err(syn::Error::new_spanned(
            extra,
            format!("a rohrpost handler takes at most {MAX_ARGUMENTS} arguments"),
        ));
    }
    Ok(())
}

fn validate_argument_type(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::Reference(reference) => Err(syn::Error::new_spanned(
            reference,
            "handler arguments are taken by value: the request is gone once the handler \
             returns (take `Request`, `Data<T>` or `Connection` instead)",
        )),
        Type::ImplTrait(_) => Err(syn::Error::new_spanned(
            ty,
            "a rohrpost handler cannot take `impl Trait` arguments: name the type",
        )),
        _ => Ok(()),
    }
}

fn generate(function: &ItemFn, names: &[LitStr], krate_path: Option<&Path>) -> TokenStream {
    let krate = crate::krate(krate_path, Span::call_site());
    let alias = crate::crate_alias(krate_path);
    let ident = &function.sig.ident;
    let function_name = names_function(ident);
    let arguments: Vec<_> = (0..function.sig.inputs.len())
        .map(|i| format_ident!("__rohrpost_arg{}", i))
        .collect();
    let last = function.sig.inputs.len().saturating_sub(1);
    let extractions =
        function
            .sig
            .inputs
            .iter()
            .zip(&arguments)
            .enumerate()
            .map(|(index, (input, argument))| {
                let FnArg::Typed(arg) = input else {
                    unreachable!("validated: no receivers")
                };
                let ty = &arg.ty;
                let krate = crate::krate(krate_path, ty.span());
                // The last argument may take parts of the request by value.
                let extract = if index == last {
                    quote_spanned! {ty.span()=>
                        #krate::__private::extract_last::<#ty>(&mut __rohrpost_cx)
                    }
                } else {
                    quote_spanned! {ty.span()=>
                        #krate::__private::extract::<#ty>(&__rohrpost_cx)
                    }
                };
                // Spanned at the type, so that a type that is not an extractor is reported there.
                quote_spanned! {ty.span()=>
                    let #argument: #ty = match #extract {
                        ::core::result::Result::Ok(value) => value,
                        ::core::result::Result::Err(error) => return #krate::__private::Reply::error(error),
                    };
                }
            });
    let output_span = match &function.sig.output {
        ReturnType::Default => ident.span(),
        ReturnType::Type(_, ty) => ty.span(),
    };
    let krate_at_output = crate::krate(krate_path, output_span);
    let reply = quote_spanned! {output_span=>
        #krate_at_output::__private::into_reply(__rohrpost_output, &__rohrpost_cx)
    };
    let boxed = quote_spanned! {ident.span()=>
        ::std::boxed::Box::pin(__rohrpost_future)
    };
    let schema = schema_registration(function, names, krate_path);
    quote! {
        #function

        #[doc(hidden)]
        const _: () = {
            #alias
            #[allow(unused_mut)]
            fn __rohrpost_call(
                mut __rohrpost_cx: #krate::__private::RequestContext,
            ) -> #krate::__private::BoxFuture<'static, #krate::__private::Reply> {
                let __rohrpost_future = async move {
                    #(#extractions)*
                    let __rohrpost_output = #ident(#(#arguments),*).await;
                    #reply
                };
                #boxed
            }

            #krate::__private::inventory::submit! {
                #krate::__private::HandlerEntry::new(
                    &[#(#names),*],
                    ::core::concat!(::core::module_path!(), "::", #function_name),
                    __rohrpost_call,
                )
            }

            #schema
        };
    }
}

/// With the `schema` feature of rohrpost: the handler's request data and reply, described.
/// `(&&Probe::<T>::new()).describe(g)` takes `T`'s schema when `T: JsonSchema`, else any
/// JSON (autoref specialization: the types are concrete here).
fn schema_registration(
    function: &ItemFn,
    names: &[LitStr],
    krate_path: Option<&Path>,
) -> TokenStream {
    let krate = crate::krate(krate_path, Span::call_site());
    let schema = quote!(#krate::__private::schema);
    let data = match data_type(function) {
        Some(ty) => quote! {
            ::core::option::Option::Some((&&#schema::Probe::<#ty>::new()).describe(__rohrpost_generator))
        },
        None => quote!(::core::option::Option::None),
    };
    let reply = match &function.sig.output {
        ReturnType::Default => quote!(#schema::ReplyDescription::empty()),
        ReturnType::Type(_, ty) => reply_description(ty, &schema),
    };
    quote! {
        #krate::__schema! {
            #krate::__private::inventory::submit! {
                #schema::HandlerSchema::new(&[#(#names),*], {
                    fn __rohrpost_describe(
                        __rohrpost_generator: &mut #schema::SchemaGenerator,
                    ) -> #schema::HandlerDescription {
                        #[allow(unused_imports)]
                        use #schema::{DescribeAny as _, DescribeTyped as _};
                        #schema::HandlerDescription::new(#data, #reply)
                    }
                    __rohrpost_describe
                })
            }
        }
    }
}

/// The `T` of a `Data<T>` argument, if the handler takes one.
fn data_type(function: &ItemFn) -> Option<&Type> {
    function.sig.inputs.iter().find_map(|input| {
        let FnArg::Typed(arg) = input else {
            return None;
        };
        let (name, argument) = last_segment(&arg.ty)?;
        (name == "Data").then_some(argument).flatten()
    })
}

/// The last segment's name of a path type and its first type argument.
fn last_segment(ty: &Type) -> Option<(String, Option<&Type>)> {
    let Type::Path(path) = ty else {
        return None;
    };
    let segment = path.path.segments.last()?;
    let argument = match &segment.arguments {
        syn::PathArguments::AngleBracketed(arguments) => {
            arguments.args.iter().find_map(|argument| match argument {
                syn::GenericArgument::Type(ty) => Some(ty),
                _ => None,
            })
        }
        _ => None,
    };
    Some((segment.ident.to_string(), argument))
}

/// What a return type makes of the reply (see `rohrpost::schema`).
fn reply_description(ty: &Type, schema: &TokenStream) -> TokenStream {
    let typed = |ty: &Type| {
        quote! {
            #schema::ReplyDescription::data((&&#schema::Probe::<#ty>::new()).describe(__rohrpost_generator))
        }
    };
    match ty {
        Type::Tuple(tuple) if tuple.elems.is_empty() => quote!(#schema::ReplyDescription::empty()),
        Type::Paren(inner) => reply_description(&inner.elem, schema),
        Type::Group(inner) => reply_description(&inner.elem, schema),
        Type::ImplTrait(_) | Type::Infer(_) => {
            quote!(#schema::ReplyDescription::data(#schema::Described::any()))
        }
        Type::Path(_) => match last_segment(ty) {
            Some((name, Some(inner))) if name == "Result" => {
                let inner = reply_description(inner, schema);
                quote!(#inner.or_error())
            }
            Some((name, Some(inner))) if name == "Option" => {
                let inner = reply_description(inner, schema);
                quote!(#inner.optional())
            }
            Some((name, Some(inner))) if name == "Json" => typed(inner),
            Some((name, None)) if name == "NoReply" => {
                quote!(#schema::ReplyDescription::no_reply())
            }
            Some((name, None)) if name == "Value" || name == "Message" => {
                quote!(#schema::ReplyDescription::data(#schema::Described::any()))
            }
            _ => typed(ty),
        },
        _ => typed(ty),
    }
}

fn names_function(ident: &syn::Ident) -> LitStr {
    let name = ident.to_string();
    LitStr::new(name.strip_prefix("r#").unwrap_or(&name), Span::call_site())
}
