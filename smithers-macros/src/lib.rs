//! Proc macros of smithers-rs: `workflow!`, `#[component]`, `#[derive(Output)]`.

use proc_macro::TokenStream;

/// Placeholder until the DSL lands.
#[proc_macro]
pub fn workflow(_input: TokenStream) -> TokenStream {
    "compile_error!(\"workflow! is not implemented yet\")"
        .parse()
        .unwrap()
}

/// Placeholder until the DSL lands.
#[proc_macro_attribute]
pub fn component(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Placeholder until the DSL lands.
#[proc_macro_derive(Output, attributes(output))]
pub fn derive_output(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}
