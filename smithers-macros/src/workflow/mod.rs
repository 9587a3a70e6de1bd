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

#[cfg(test)]
mod tests {
    use super::*;

    /// The expansion as formatted Rust: the `compile_error!`s beside the best-effort tree.
    fn expand(input: TokenStream) -> String {
        let out = workflow(input);
        let file: syn::File = syn::parse2(quote!(fn render() -> Node { #out }))
            .unwrap_or_else(|e| panic!("expansion does not parse: {e}\n{out}"));
        prettyplease::unparse(&file)
    }

    #[test]
    fn expansion_of_a_valid_tree() {
        insta::assert_snapshot!(expand(quote!(
            <Workflow name="w">
                <Task id=ANALYZE agent={claude()} retries=2>"Analyze " {bug}</Task>
                <Ralph until={done} max_iterations=3 on_max_reached=Fail>
                    <Task id="fix" output=Patch agent={codex()} continue_on_fail />
                </Ralph>
            </Workflow>
        )));
    }

    #[test]
    fn expansion_of_prop_errors_keeps_the_rest_of_the_tree() {
        insta::assert_snapshot!(expand(quote!(
            <Workflow name="w">
                <Task id="a" output=Out maxRetries=2 retries=1 retries=3 value={v} />
                <Ralph untill={done}>
                    <Sequense />
                    <Task output=Out value={v} />
                </Ralph>
            </Workflow>
        )));
    }
}
