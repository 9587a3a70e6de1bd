//! Code generation for `workflow!`: each tag becomes a typed builder chain naming only
//! `::smithers::__private`. Invalid pieces are dropped (bad props) or replaced by an empty
//! fragment (unknown tags), so the only errors are the ones `validate` reported.

use std::collections::HashSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Expr, Type};

use super::model::{Child, Element, Prop, PropValue};
use super::tags::{Tag, TagKind};

/// The expression a whole `workflow!` expands to: the root node, or a fragment of several.
pub(crate) fn expand_root(children: &[Child]) -> TokenStream {
    match children {
        [Child::Element(el)] => expand_element(el),
        _ => fragment(children, Span::call_site()),
    }
}

fn fragment(children: &[Child], span: Span) -> TokenStream {
    let calls = node_children(children);
    quote_spanned!(span=> ::smithers::__private::Fragment::new() #(#calls)* .build())
}

/// `.child(..)` calls for the node children (text is skipped: validate reported it).
fn node_children(children: &[Child]) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for child in children {
        match child {
            Child::Element(el) => {
                let node = expand_element(el);
                out.push(quote_spanned!(el.span()=> .child(#node)));
            }
            Child::Expr(e) => out.push(quote_spanned!(e.span()=> .child(#e))),
            Child::Fragment(cs) => out.extend(node_children(cs)),
            Child::Text(_) | Child::RawText(..) => {}
        }
    }
    out
}

fn expand_element(el: &Element) -> TokenStream {
    match Tag::classify(&el.name_str) {
        TagKind::Builtin(Tag::Task) => expand_task(el),
        TagKind::Builtin(tag) => expand_container(el, tag),
        TagKind::Component => expand_component(el),
        TagKind::Unknown => fragment(&el.children, el.span()),
    }
}

/// The props that become method calls: known to the tag, first occurrence only.
fn prop_calls(el: &Element, tag: Tag) -> Vec<TokenStream> {
    let mut seen = HashSet::new();
    el.props
        .iter()
        .filter(|p| seen.insert(p.name.as_str()))
        .filter_map(|p| {
            let mut method = tag.method(&p.name)?;
            // A literal task id is `'static`: `id_static` keeps it borrowed, so a re-render does
            // not allocate it. Any other expression (a `Ref`, a `&str` variable, a `String`) goes
            // through the generic `id`.
            if tag == Tag::Task && method == "id" && p.value.as_str_lit().is_some() {
                method = "id_static";
            }
            let method = format_ident!("{}", method, span = p.span);
            let value = prop_value(p);
            Some(quote_spanned!(p.span=> .#method(#value)))
        })
        .collect()
}

fn prop_value(p: &Prop) -> TokenStream {
    // The enum props take a bare variant (`on_max_reached=Fail`, `on_budget=Park`).
    if let Some((ty, variants)) = super::tags::enum_prop(&p.name) {
        if let Some(Expr::Path(path)) = p.value.expr() {
            if let Some(ident) = path
                .path
                .get_ident()
                .filter(|i| variants.iter().any(|v| *i == v))
            {
                let ty = format_ident!("{}", ty, span = ident.span());
                return quote_spanned!(ident.span()=> ::smithers::__private::#ty::#ident);
            }
        }
    }
    p.value.to_tokens_at(p.span)
}

fn expand_container(el: &Element, tag: Tag) -> TokenStream {
    let span = el.span();
    let builder = format_ident!("{}", tag.name(), span = span);
    let props = prop_calls(el, tag);
    let children = node_children(&el.children);
    quote_spanned!(span=> ::smithers::__private::#builder::new() #(#props)* #(#children)* .build())
}

fn expand_task(el: &Element) -> TokenStream {
    let span = el.span();
    let output = el.prop("output").and_then(output_type);
    // A string id without `output` cannot infer the type; validate reported it, so emit a
    // placeholder rather than a cascade of "type annotations needed".
    if output.is_none()
        && el
            .prop("id")
            .is_some_and(|p| p.value.as_str_lit().is_some())
    {
        return quote_spanned!(span=> ::smithers::__private::Fragment::new().build());
    }
    let props = prop_calls(el, Tag::Task);
    let prompts = prompt_parts(&el.children);
    match &output {
        // `TaskOf::<T>::new().task()` is `Task::<T>::new()` when `T: Output`, and an inert
        // builder otherwise, so a bad `output=` gives the one error of `assert_output` at `T`.
        Some(ty) => {
            let check = quote_spanned!(ty.span()=> const _: () = ::smithers::__private::assert_output::<#ty>(););
            quote_spanned!(span=> {
                #check
                #[allow(unused_imports)]
                use ::smithers::__private::TaskOfFallback as _;
                ::smithers::__private::TaskOf::<#ty>::new().task() #(#props)* #(#prompts)* .build()
            })
        }
        None => {
            quote_spanned!(span=> ::smithers::__private::Task::<_>::new() #(#props)* #(#prompts)* .build())
        }
    }
}

/// `output=T` as a type: a path, or any type in braces (`output={Vec<Item>}`).
fn output_type(p: &Prop) -> Option<Type> {
    let tokens = match &p.value {
        PropValue::Flag => return None,
        PropValue::Expr(e) if matches!(&**e, Expr::Block(b) if b.block.stmts.is_empty()) => {
            return None
        }
        PropValue::Expr(e) => e.to_token_stream(),
        PropValue::Tokens(t) => {
            let mut it = t.clone().into_iter();
            match (it.next(), it.next()) {
                (Some(proc_macro2::TokenTree::Group(g)), None) => g.stream(),
                _ => t.clone(),
            }
        }
    };
    syn::parse2(tokens).ok()
}

fn prompt_parts(children: &[Child]) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for child in children {
        match child {
            Child::Text(t) => out.push(quote_spanned!(t.span()=> .prompt(#t))),
            Child::Expr(e) => out.push(quote_spanned!(e.span()=> .prompt(#e))),
            Child::Fragment(cs) => out.extend(prompt_parts(cs)),
            Child::Element(_) | Child::RawText(..) => {}
        }
    }
    out
}

/// `<Comp a=1 b={x}>children</Comp>` →
/// `Comp::__component_props().a(1).b(x).children(fragment).__call(PhantomData)`: only the type namespace
/// is named, so a tag that resolves to nothing is one error.
fn expand_component(el: &Element) -> TokenStream {
    let span = el.span();
    let path = &el.name;
    let mut seen = HashSet::new();
    let props = el
        .props
        .iter()
        .filter(|p| seen.insert(p.name.as_str()))
        .map(|p| {
            let method = format_ident!("{}", p.name, span = p.span);
            let value = p.value.to_tokens_at(p.span);
            quote_spanned!(p.span=> .#method(#value))
        });
    let children = if el.children.is_empty() {
        TokenStream::new()
    } else {
        let frag = fragment(&el.children, span);
        quote_spanned!(span=> .children(#frag))
    };
    quote_spanned!(span=> #path::__component_props() #(#props)* #children .__call(::core::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctxt::Ctxt;
    use crate::workflow::model;
    use quote::quote;

    fn check(input: TokenStream, expected: &str) {
        let mut cx = Ctxt::new();
        let m = model::parse(input, &mut cx);
        let _ = cx.into_compile_errors();
        let got = expand_root(&m).to_string();
        assert_eq!(got, expected);
    }

    #[test]
    fn container_props_and_children() {
        check(
            quote!(<Ralph until={done} max_iterations=3 on_max_reached=Fail>{nodes}</Ralph>),
            ":: smithers :: __private :: Ralph :: new () . until (done) . max_iterations (3) \
             . on_max_reached (:: smithers :: __private :: OnMaxReached :: Fail) . child (nodes) . build ()",
        );
    }

    #[test]
    fn branch_if_else_map_to_cond_otherwise() {
        check(
            quote!(<Branch if={c} else={n} />),
            ":: smithers :: __private :: Branch :: new () . cond (c) . otherwise (n) . build ()",
        );
    }

    #[test]
    fn task_without_output_infers_type() {
        check(
            quote!(<Task id=A agent={a()} continue_on_fail>"x" {y}</Task>),
            ":: smithers :: __private :: Task :: < _ > :: new () . id (A) . agent (a ()) \
             . continue_on_fail (true) . prompt (\"x\") . prompt (y) . build ()",
        );
    }

    #[test]
    fn task_output_sets_type_and_asserts_output() {
        check(
            quote!(<Task id="fix" output={Vec<Patch>} />),
            "{ const _ : () = :: smithers :: __private :: assert_output :: < Vec < Patch > > () ; \
             # [allow (unused_imports)] use :: smithers :: __private :: TaskOfFallback as _ ; \
             :: smithers :: __private :: TaskOf :: < Vec < Patch > > :: new () . task () . id_static (\"fix\") . build () }",
        );
    }

    #[test]
    fn unknown_props_and_duplicates_are_dropped() {
        check(
            quote!(<Sequence skip_if banana=1 skip_if=false />),
            ":: smithers :: __private :: Sequence :: new () . skip_if (true) . build ()",
        );
    }

    #[test]
    fn component_becomes_props_builder_call() {
        check(
            quote!(<my::Review ctx={ctx} glob="src"><Sequence /></my::Review>),
            "my :: Review :: __component_props () . ctx (ctx) . glob (\"src\") \
             . children (:: smithers :: __private :: Fragment :: new () . child (:: smithers :: __private :: Sequence :: new () . build ()) . build ()) \
             . __call (:: core :: marker :: PhantomData)",
        );
    }

    #[test]
    fn several_roots_become_a_fragment() {
        check(
            quote!(<Sequence /><Parallel />),
            ":: smithers :: __private :: Fragment :: new () . child (:: smithers :: __private :: Sequence :: new () . build ()) \
             . child (:: smithers :: __private :: Parallel :: new () . build ()) . build ()",
        );
    }
}
