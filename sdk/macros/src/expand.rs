//! The expansion of `#[weft_sdk::filter]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{ImplItem, ItemImpl, parse_quote};

use crate::phases::phases_of;

const USAGE: &str = "#[weft_sdk::filter] goes on `impl Filter for YourType { ... }`";

/// Expands `#[weft_sdk::filter]` (with arguments `attr`) on `item`.
pub fn filter(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "#[weft_sdk::filter] takes no arguments",
        ));
    }
    let mut block: ItemImpl =
        syn::parse2(item).map_err(|err| syn::Error::new(err.span(), format!("{USAGE}: {err}")))?;
    check_filter_impl(&block)?;

    if !defines_const(&block, "PHASES") {
        let methods = block.items.iter().filter_map(|item| match item {
            ImplItem::Fn(method) => Some(method.sig.ident.to_string()),
            _ => None,
        });
        let methods: Vec<String> = methods.collect();
        let phases = phases_of(methods.iter().map(String::as_str))
            .into_iter()
            .map(|phase| format_ident!("{phase}"));
        block.items.push(parse_quote! {
            const PHASES: ::weft_sdk::Phases =
                ::weft_sdk::Phases::empty() #(.union(::weft_sdk::Phases::#phases))*;
        });
    }

    let self_ty = &block.self_ty;
    Ok(quote! {
        #block
        ::weft_sdk::__export_filter!(#self_ty);
    })
}

/// Checks that `block` is `impl Filter for T` with nothing the export cannot
/// handle.
fn check_filter_impl(block: &ItemImpl) -> syn::Result<()> {
    let Some((negative, trait_path, _)) = &block.trait_ else {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            format!("{USAGE}: this is an inherent impl, not an impl of `Filter`"),
        ));
    };
    if negative.is_some() {
        return Err(syn::Error::new_spanned(trait_path, USAGE));
    }
    let is_filter = trait_path
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "Filter" && segment.arguments.is_none());
    if !is_filter {
        return Err(syn::Error::new_spanned(
            trait_path,
            format!("{USAGE}: this implements another trait"),
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "#[weft_sdk::filter] exports one concrete type: the impl cannot have generic \
             parameters (write the impl for the concrete type, e.g. `impl Filter for MyFilter<u8>`)",
        ));
    }
    if let Some(unsafety) = block.unsafety {
        return Err(syn::Error::new_spanned(unsafety, USAGE));
    }
    Ok(())
}

fn defines_const(block: &ItemImpl, name: &str) -> bool {
    block
        .items
        .iter()
        .any(|item| matches!(item, ImplItem::Const(c) if c.ident == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(item: TokenStream) -> String {
        filter(TokenStream::new(), item).unwrap().to_string()
    }

    fn error(attr: TokenStream, item: TokenStream) -> String {
        filter(attr, item).unwrap_err().to_string()
    }

    #[test]
    fn phases_come_from_the_defined_methods() {
        let out = expand(quote! {
            impl Filter for Tagger {
                type Config = ();
                fn new(_: ()) -> Result<Self, String> { Ok(Tagger) }
                fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action { Action::Continue }
                fn on_request_headers(&mut self, req: &Request) -> Action { Action::Continue }
            }
        });
        let expected = quote! {
            const PHASES: ::weft_sdk::Phases = ::weft_sdk::Phases::empty()
                .union(::weft_sdk::Phases::REQUEST_HEADERS)
                .union(::weft_sdk::Phases::RESPONSE_HEADERS);
        };
        assert!(out.contains(&expected.to_string()), "{out}");
        assert!(
            out.ends_with(&quote! { ::weft_sdk::__export_filter!(Tagger); }.to_string()),
            "{out}"
        );
    }

    #[test]
    fn no_phase_methods_means_no_phases() {
        let out = expand(quote! {
            impl weft_sdk::Filter for Quiet {
                type Config = ();
                fn new(_: ()) -> Result<Self, String> { Ok(Quiet) }
            }
        });
        let expected = quote! { const PHASES: ::weft_sdk::Phases = ::weft_sdk::Phases::empty(); };
        assert!(out.contains(&expected.to_string()), "{out}");
    }

    #[test]
    fn an_explicit_phases_const_is_kept() {
        let out = expand(quote! {
            impl Filter for Explicit {
                type Config = ();
                const PHASES: Phases = Phases::all();
                fn new(_: ()) -> Result<Self, String> { Ok(Explicit) }
                fn on_done(&mut self, req: &Request, resp: &Response) {}
            }
        });
        assert_eq!(out.matches("const PHASES").count(), 1, "{out}");
        assert!(out.contains("Phases :: all ()"), "{out}");
    }

    #[test]
    fn rejects_what_is_not_a_filter_impl() {
        let usage = "#[weft_sdk::filter] goes on `impl Filter for YourType { ... }`";
        let err = error(TokenStream::new(), quote! { struct NotAnImpl; });
        assert!(err.starts_with(usage), "{err}");
        let err = error(TokenStream::new(), quote! { impl Inherent { fn new() {} } });
        assert!(err.contains("inherent impl"), "{err}");
        let err = error(TokenStream::new(), quote! { impl Clone for X { } });
        assert!(err.contains("another trait"), "{err}");
        let err = error(TokenStream::new(), quote! { impl<T> Filter for X<T> { } });
        assert!(err.contains("generic"), "{err}");
        let err = error(quote! { phases = "all" }, quote! { impl Filter for X { } });
        assert_eq!(err, "#[weft_sdk::filter] takes no arguments");
    }
}
