//! `workflow!`: parse permissively into a model (`model`), validate it collecting every error
//! (`validate`), then always expand (`expand`), emitting the errors beside the expansion.

mod expand;
mod model;
mod tags;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

use crate::ctxt::Ctxt;

/// The whole macro: errors first, then the best-effort node expression.
pub(crate) fn workflow(input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::new();
    let model = model::parse(input, &mut cx);
    validate::validate_root(&model, &mut cx);
    let node = expand::expand_root(&model);
    if !cx.has_errors() {
        let _ = cx.into_compile_errors();
        return node;
    }
    let errors = cx.into_compile_errors();
    quote!({ #errors #node })
}
