//! Proc macros of smithers-rs: `workflow!`, `#[component]`, `#[derive(Output)]`.
//!
//! Use them through the `smithers` facade, which re-exports them. Every expansion names the
//! runtime only through `::smithers::__private` and `::core`.
//!
//! Each macro parses into a model, validates it into an error context (`ctxt`) that collects every error
//! with its span, and then always expands, so one mistake gives one error.

use proc_macro::TokenStream;

mod component;
mod ctxt;
mod output;
mod serde_attrs;
mod suggest;
mod workflow;

/// A workflow tree written as tags; an expression of type `Node`.
///
/// See the `smithers` crate documentation for the tags and props.
#[proc_macro]
pub fn workflow(input: TokenStream) -> TokenStream {
    workflow::workflow(input.into()).into()
}

/// Makes a function usable as a tag in `workflow!`, with its parameters as typed props.
#[proc_macro_attribute]
pub fn component(attr: TokenStream, item: TokenStream) -> TokenStream {
    component::component(attr.into(), item.into()).into()
}

/// Implements `Output` for a struct with named fields: its table and columns.
///
/// The table is the struct's name in snake_case, or `#[output(table = "...")]`. Each field is a
/// column named as serde serializes it (`rename`, `rename_all`; `skip` and `skip_serializing`
/// fields have none, `flatten` is refused). The column's kind and nullability come from the
/// field type's `ColumnType` implementation (integers, floats, `bool`, strings, `Option<T>`,
/// collections as JSON, ...), so a type alias is stored as the type it names. A field of another
/// type is stored as JSON when marked `#[output(json)]`. A field with `skip_serializing_if` may be
/// missing, so its column takes `NULL`.
#[proc_macro_derive(Output, attributes(output))]
pub fn derive_output(input: TokenStream) -> TokenStream {
    output::derive(input.into()).into()
}
