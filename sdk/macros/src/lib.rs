//! The `#[filter]` attribute of `weft-sdk`. Use it as `#[weft_sdk::filter]`;
//! its documentation is in that crate.

use proc_macro::TokenStream;

mod expand;
mod phases;

/// Exports an `impl Filter for T` block's type as the component's filter and
/// sets its `PHASES` from the methods the block defines. See `weft_sdk`.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::filter(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
