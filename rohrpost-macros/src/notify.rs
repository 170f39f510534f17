//! `#[derive(Notify)]`: parse the `#[rohrpost(...)]` attributes, validate, expand.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitBool, LitStr, Path};

/// What the attributes asked for.
#[derive(Default)]
struct Options {
    pk: Option<Ident>,
    name: Option<LitStr>,
    group: Option<LitStr>,
    group_name: Option<Path>,
    data: Option<Path>,
    /// Where `serialize` was written, for errors about a missing `Serialize`.
    serialize: Option<Span>,
    always_send: Option<LitBool>,
    /// Where `conflate` was written.
    conflate: Option<Span>,
    /// `crate = "path"`: where the `rohrpost` crate is, when renamed or re-exported.
    krate: Option<Path>,
}

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let options = parse_options(&input)?;
    let pk = validate(&input, &options)?;
    Ok(generate(&input, &options, &pk))
}

fn parse_options(input: &DeriveInput) -> syn::Result<Options> {
    let mut options = Options::default();
    let mut seen = std::collections::HashSet::new();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("rohrpost")) {
        attr.parse_nested_meta(|meta| {
            // Every option once, across all `#[rohrpost(...)]` attributes of the type.
            if let Some(name) = meta.path.get_ident() {
                if !seen.insert(name.to_string()) {
                    return Err(meta.error(format!("`{name}` is given twice")));
                }
            }
            if meta.path.is_ident("pk") {
                let field: LitStr = meta.value()?.parse()?;
                options.pk = Some(field.parse().map_err(|_| {
                    syn::Error::new(field.span(), "`pk` names a field, like `pk = \"id\"`")
                })?);
            } else if meta.path.is_ident("name") {
                let name: LitStr = meta.value()?.parse()?;
                if name.value().is_empty() {
                    return Err(syn::Error::new(name.span(), "`name` cannot be empty"));
                }
                options.name = Some(name);
            } else if meta.path.is_ident("group") {
                let template: LitStr = meta.value()?.parse()?;
                check_template(&template)?;
                options.group = Some(template);
            } else if meta.path.is_ident("group_name") {
                let path: LitStr = meta.value()?.parse()?;
                options.group_name = Some(path.parse()?);
            } else if meta.path.is_ident("data") {
                let path: LitStr = meta.value()?.parse()?;
                options.data = Some(path.parse()?);
            } else if meta.path.is_ident("serialize") {
                options.serialize = Some(meta.path.span());
            } else if meta.path.is_ident("always_send") {
                options.always_send = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("conflate") {
                options.conflate = Some(meta.path.span());
            } else if meta.path.is_ident("crate") {
                let path: LitStr = meta.value()?.parse()?;
                options.krate = Some(path.parse().map_err(|_| {
                    syn::Error::new(
                        path.span(),
                        "`crate` takes the path to rohrpost, like `crate = \"::my_rohrpost\"`",
                    )
                })?);
            } else {
                return Err(meta.error(
                    "unknown rohrpost attribute: expected `pk`, `name`, `group`, \
                     `group_name`, `data`, `serialize`, `always_send`, `conflate` or `crate`",
                ));
            }
            Ok(())
        })?;
    }
    Ok(options)
}

/// A group template may hold `{pk}` and no other placeholder.
fn check_template(template: &LitStr) -> syn::Result<()> {
    let text = template.value();
    let without_pk = text.replace("{pk}", "");
    if without_pk.contains('{') || without_pk.contains('}') {
        return Err(syn::Error::new(
            template.span(),
            "a group template may only use the `{pk}` placeholder, like \"todo-{pk}\"",
        ));
    }
    Ok(())
}

/// Finds the primary-key field, and checks that the options go together.
fn validate(input: &DeriveInput, options: &Options) -> syn::Result<Ident> {
    if let (Some(conflate), Some(_)) = (options.conflate, &options.data) {
        return Err(syn::Error::new(
            conflate,
            "`conflate` needs every update to push the whole object, and `data = \"…\"` may push \
             only part of it (a conflated update would lose the fields of the ones it replaced): \
             drop `data`, or `conflate`",
        ));
    }
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "derive(Notify) needs a struct with named fields; implement `rohrpost::notify::Notify` by hand for other types",
        ));
    };
    let Fields::Named(fields) = &data.fields else {
        return Err(syn::Error::new(
            data.fields.span(),
            "derive(Notify) needs a struct with named fields; implement `rohrpost::notify::Notify` by hand for other types",
        ));
    };
    let wanted = options
        .pk
        .clone()
        .unwrap_or_else(|| Ident::new("id", input.ident.span()));
    let found = fields
        .named
        .iter()
        .any(|field| field.ident.as_ref() == Some(&wanted));
    if !found {
        let message = match &options.pk {
            Some(_) => format!("no field `{wanted}` to use as the primary key"),
            None => {
                "no `id` field: name the primary key with `#[rohrpost(pk = \"field\")]`".to_owned()
            }
        };
        return Err(syn::Error::new(wanted.span(), message));
    }
    Ok(wanted)
}

fn generate(input: &DeriveInput, options: &Options, pk: &Ident) -> TokenStream {
    let ident = &input.ident;
    let krate = crate::krate(options.krate.as_ref(), Span::call_site());
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    let type_name = options
        .name
        .as_ref()
        .map(LitStr::value)
        .unwrap_or_else(|| ident.to_string().to_lowercase());
    // The method beats the template, as in the original.
    let group_name = match (&options.group_name, &options.group) {
        (Some(path), _) => Some(quote! {
            fn group_name(&self, change: #krate::notify::Change) -> ::std::string::String {
                #path(self, change)
            }
        }),
        (None, Some(template)) => Some(quote! {
            fn group_name(&self, _change: #krate::notify::Change) -> ::std::string::String {
                #krate::notify::fill_template(#template, &#krate::notify::Notify::pk(self))
            }
        }),
        (None, None) => None,
    };
    // The data function beats the serializer, as in the original.
    let data = match (&options.data, options.serialize) {
        (Some(path), _) => Some(quote! {
            fn notification_data(
                &self,
                updated_fields: ::core::option::Option<&[&str]>,
                change: #krate::notify::Change,
            ) -> #krate::__private::serde_json::Value {
                #path(self, updated_fields, change)
            }
        }),
        (None, Some(span)) => {
            let krate = crate::krate(options.krate.as_ref(), span);
            let serialized = quote_spanned! {span=> #krate::__private::serialized_or_pk(self) };
            Some(quote! {
                fn notification_data(
                    &self,
                    _updated_fields: ::core::option::Option<&[&str]>,
                    _change: #krate::notify::Change,
                ) -> #krate::__private::serde_json::Value {
                    #serialized
                }
            })
        }
        (None, None) => None,
    };
    let always_send = options.always_send.as_ref().map(|value| {
        quote! {
            fn always_send(&self) -> bool {
                #value
            }
        }
    });
    let conflate = options.conflate.map(|span| {
        quote_spanned! {span=>
            fn conflate(&self) -> bool {
                true
            }
        }
    });
    // With the `schema` feature of rohrpost: the pushed object's schema, per group type.
    let schema = (options.serialize.is_some()
        && options.data.is_none()
        && input.generics.params.is_empty())
    .then(|| {
        let schema = quote!(#krate::__private::schema);
        quote! {
            #krate::__schema! {
                #krate::__private::inventory::submit! {
                    #schema::PushSchema::new(#type_name, {
                        fn __rohrpost_describe(
                            __rohrpost_generator: &mut #schema::SchemaGenerator,
                        ) -> #schema::Described {
                            #[allow(unused_imports)]
                            use #schema::{DescribeAny as _, DescribeTyped as _};
                            (&&#schema::Probe::<#ident>::new()).describe(__rohrpost_generator)
                        }
                        __rohrpost_describe
                    })
                }
            }
        }
    });
    let implementation = quote! {
        #schema

        impl #impl_generics #krate::notify::Notify for #ident #type_generics #where_clause {
            fn pk(&self) -> #krate::__private::serde_json::Value {
                #krate::__private::to_pk(&self.#pk)
            }

            fn type_name(&self) -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(#type_name)
            }

            #group_name
            #data
            #always_send
            #conflate
        }
    };
    match &options.krate {
        // The alias lives in a block of its own, beside the implementation.
        Some(path) => {
            let alias = crate::crate_alias(Some(path));
            quote! {
                const _: () = {
                    #alias
                    #implementation
                };
            }
        }
        None => quote! {
            const _: () = {
                #implementation
            };
        },
    }
}
