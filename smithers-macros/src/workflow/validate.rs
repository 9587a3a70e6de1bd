//! Validation of the `workflow!` model: every problem becomes a spanned error in the context;
//! nothing here stops expansion.

use std::collections::HashSet;

use proc_macro2::Span;
use syn::Expr;

use super::model::{Child, Element, PropValue};
use super::tags::{Tag, TagKind};
use crate::ctxt::Ctxt;
use crate::suggest::{closest, to_snake_case};

pub(crate) const TEXT_IN_CONTAINER: &str = "text is only allowed as the prompt of a <Task>";

/// Validates the top level of a `workflow!`.
pub(crate) fn validate_root(children: &[Child], cx: &mut Ctxt) {
    if children.is_empty() {
        cx.error(Span::call_site(), "`workflow!` needs a root tag, e.g. `workflow! { <Workflow name=\"x\"> ... </Workflow> }`");
    }
    validate_closing(children, &mut Vec::new(), &mut HashSet::new(), cx);
    validate_children(children, None, cx);
}

/// Closing tags. The parser gives each closing tag to the innermost open tag, so a missing
/// `</Branch>` in `<Workflow><Branch>..</Workflow>` reads as `<Branch>` closed by `</Workflow>`
/// and `<Workflow>` never closed: the error belongs to `<Branch>` alone. `open` holds the
/// enclosing tags; `taken` those whose closing tag an unclosed descendant took.
fn validate_closing<'a>(
    children: &'a [Child],
    open: &mut Vec<&'a Element>,
    taken: &mut HashSet<*const Element>,
    cx: &mut Ctxt,
) {
    for child in children {
        let el = match child {
            Child::Element(el) => el,
            Child::Fragment(cs) => {
                validate_closing(cs, open, taken, cx);
                continue;
            }
            _ => continue,
        };
        if let Some((close, span)) = &el.close {
            if *close != el.name_str {
                match open.iter().rev().find(|a| a.name_str == *close) {
                    Some(owner) => {
                        taken.insert(std::ptr::from_ref(*owner));
                        cx.error(
                            el.span(),
                            format!(
                                "<{0}> is not closed: add </{0}> before </{close}>",
                                el.name_str
                            ),
                        );
                    }
                    None => cx.error(
                        *span,
                        format!(
                            "mismatched closing tag: expected </{}>, found </{close}>",
                            el.name_str
                        ),
                    ),
                }
            }
        }
        open.push(el);
        validate_closing(&el.children, open, taken, cx);
        open.pop();
        if el.close.is_none() && !el.self_closed && !taken.contains(&std::ptr::from_ref(el)) {
            cx.error(
                el.span(),
                format!(
                    "<{0}> is not closed: add </{0}> after its last child, or end the tag with `/>` if it has none",
                    el.name_str
                ),
            );
        }
    }
}

fn validate_children(children: &[Child], parent: Option<Tag>, cx: &mut Ctxt) {
    let prompt = parent.is_some_and(Tag::takes_prompt);
    for child in children {
        match child {
            Child::Element(el) if prompt => {
                cx.error(
                    el.span(),
                    format!(
                        "a <Task> cannot contain <{}>: its children are its prompt (\"text\" and {{expr}}); \
                         put the tag next to the task in a container",
                        el.name_str
                    ),
                );
                validate_element(el, cx);
            }
            Child::Element(el) => validate_element(el, cx),
            Child::Text(t) if !prompt => cx.error(t.span(), TEXT_IN_CONTAINER),
            Child::RawText(span, _) if !prompt => cx.error(*span, TEXT_IN_CONTAINER),
            Child::RawText(span, text) => cx.error(
                *span,
                format!("prompt text must be a string literal: \"{text}\""),
            ),
            Child::Fragment(cs) => validate_children(cs, parent, cx),
            Child::Text(_) | Child::Expr(_) => {}
        }
    }
}

fn validate_element(el: &Element, cx: &mut Ctxt) {
    let tag = match Tag::classify(&el.name_str) {
        TagKind::Builtin(tag) => Some(tag),
        TagKind::Component => None,
        TagKind::Unknown => {
            let msg = match closest(&el.name_str, Tag::ALL.map(Tag::name)) {
                Some(s) => format!("unknown tag <{}>; did you mean <{s}>?", el.name_str),
                None => format!(
                    "unknown tag <{}>; built-in tags are {}, and components start with a capital letter",
                    el.name_str,
                    Tag::ALL.map(|t| format!("<{}>", t.name())).join(", ")
                ),
            };
            cx.error(el.span(), msg);
            validate_children(&el.children, None, cx);
            return;
        }
    };
    validate_props(el, tag, cx);
    if let Some(tag) = tag {
        validate_required(el, tag, cx);
    }
    validate_children(&el.children, tag, cx);
}

fn validate_props(el: &Element, tag: Option<Tag>, cx: &mut Ctxt) {
    let mut seen = HashSet::new();
    let what = match tag {
        Some(t) => format!("<{}>", t.name()),
        None => format!("component <{}>", el.name_str),
    };
    for prop in &el.props {
        if !seen.insert(prop.name.as_str()) {
            cx.error(
                prop.span,
                format!("duplicate prop `{}` on {what}", prop.name),
            );
            continue;
        }
        let snake = to_snake_case(&prop.name);
        let known = |p: &str| tag.is_none_or(|t| t.props().contains(&p));
        if snake != prop.name && known(&snake) {
            cx.error(
                prop.span,
                format!(
                    "props are snake_case: write `{snake}` instead of `{}`",
                    prop.name
                ),
            );
            continue;
        }
        let Some(tag) = tag else { continue };
        if !known(&prop.name) {
            let msg = match closest(&prop.name, tag.props().iter().copied()) {
                Some(s) => format!(
                    "unknown prop `{}` on {what}; did you mean `{s}`?",
                    prop.name
                ),
                None => format!(
                    "unknown prop `{}` on {what}; expected one of: {}",
                    prop.name,
                    tag.props().join(", ")
                ),
            };
            cx.error(prop.span, msg);
            continue;
        }
        if let Some((_, variants)) = super::tags::enum_prop(&prop.name) {
            validate_enum_prop(&prop.name, variants, &prop.value, cx);
        }
    }
}

fn validate_enum_prop(name: &str, variants: &[&str], value: &PropValue, cx: &mut Ctxt) {
    if let Some(Expr::Path(p)) = value.expr() {
        if let Some(ident) = p.path.get_ident() {
            let s = ident.to_string();
            let looks_like_variant = s.starts_with(|c: char| c.is_ascii_uppercase())
                && s.chars().any(|c| c.is_lowercase());
            if looks_like_variant && !variants.contains(&s.as_str()) {
                let list: Vec<String> = variants.iter().map(|v| format!("`{v}`")).collect();
                cx.error(
                    ident.span(),
                    format!("`{name}` is {}, not `{s}`", list.join(" or ")),
                );
            }
        }
    }
}

fn validate_required(el: &Element, tag: Tag, cx: &mut Ctxt) {
    for req in tag.required() {
        if el.prop(req).is_none() {
            let hint = match *req {
                "id" => "a `Ref<T>` (`id=ANALYZE`) or a string with `output=T` (`id=\"fix\" output=Patch`)",
                _ => "a string (`name=\"build\"`)",
            };
            cx.error(
                el.span(),
                format!(
                    "<{}> is missing the required prop `{req}`: {hint}",
                    tag.name()
                ),
            );
        }
    }
    if tag == Tag::Task {
        // What the task does: one of three; a second one would silently replace the first.
        let mut execs = el
            .props
            .iter()
            .filter(|p| matches!(p.name.as_str(), "agent" | "run" | "value"));
        if let (Some(first), Some(second)) = (execs.next(), execs.next()) {
            cx.error(
                second.span,
                format!(
                    "a <Task> does one thing: `{}` and `{}` cannot both be given; keep `agent` (an agent answers the prompt), `run` (a compute body) or `value` (a static output)",
                    first.name, second.name
                ),
            );
        }
    }
    if tag == Tag::Task && el.prop("output").is_none() {
        if let Some(id) = el.prop("id").and_then(|p| p.value.as_str_lit()) {
            cx.error(
                el.span(),
                format!(
                    "<Task id={:?}> is missing the required prop `output`: a string id does not say what the task \
                     returns; add `output=YourType` or use a `Ref<YourType>` as the id",
                    id.value()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model;
    use proc_macro2::TokenStream;
    use quote::quote;

    fn check(input: TokenStream, expected: &[&str]) {
        let mut cx = Ctxt::new();
        let m = model::parse(input, &mut cx);
        validate_root(&m, &mut cx);
        assert_eq!(cx.messages(), expected);
        let _ = cx.into_compile_errors();
    }

    #[test]
    fn valid_tree_has_no_errors() {
        check(
            quote!(<Workflow name="w"><Task id=A agent={a()} retries=2>"p" {x}</Task>
                <Ralph until={done} max_iterations=3 on_max_reached=Fail>{nodes}</Ralph>
                <Branch if={c}><Task id="t" output=Out value={v} /></Branch>
                <Phase name="p"><Step name="s"><Parallel max_concurrency=2 skip_if /></Step></Phase>
                <my::Component glob="x" /></Workflow>),
            &[],
        );
    }

    #[test]
    fn unknown_tag_suggests_builtin() {
        check(
            quote!(<sequence />),
            &["unknown tag <sequence>; did you mean <Sequence>?"],
        );
    }

    #[test]
    fn unknown_prop_suggests_nearest() {
        check(
            quote!(<Task id=A retires=2 />),
            &["unknown prop `retires` on <Task>; did you mean `retries`?"],
        );
        check(
            quote!(<Sequence banana=1 />),
            &["unknown prop `banana` on <Sequence>; expected one of: skip_if, label"],
        );
    }

    #[test]
    fn camel_case_prop_suggests_snake_case() {
        check(
            quote!(<Ralph maxIterations=3 />),
            &["props are snake_case: write `max_iterations` instead of `maxIterations`"],
        );
        check(
            quote!(<Comp globPattern="x" />),
            &["props are snake_case: write `glob_pattern` instead of `globPattern`"],
        );
    }

    #[test]
    fn duplicate_prop_is_reported_once() {
        check(
            quote!(<Task id=A retries=1 retries=2 />),
            &["duplicate prop `retries` on <Task>"],
        );
    }

    #[test]
    fn missing_required_props() {
        check(quote!(<Task agent={a} />), &["<Task> is missing the required prop `id`: a `Ref<T>` (`id=ANALYZE`) or a string with `output=T` (`id=\"fix\" output=Patch`)"]);
        check(quote!(<Task id="fix" />), &["<Task id=\"fix\"> is missing the required prop `output`: a string id does not say what the task returns; add `output=YourType` or use a `Ref<YourType>` as the id"]);
        check(
            quote!(<Step />),
            &["<Step> is missing the required prop `name`: a string (`name=\"build\"`)"],
        );
    }

    #[test]
    fn a_task_has_one_of_agent_run_and_value() {
        check(
            quote!(<Task id=A agent={a} value={v} />),
            &["a <Task> does one thing: `agent` and `value` cannot both be given; keep `agent` (an agent answers the prompt), `run` (a compute body) or `value` (a static output)"],
        );
    }

    #[test]
    fn mismatched_close_tag() {
        check(
            quote!(<Sequence></Parallel>),
            &["mismatched closing tag: expected </Sequence>, found </Parallel>"],
        );
    }

    #[test]
    fn unclosed_tag_is_reported_once_at_itself() {
        check(
            quote!(<Workflow name="w"><Branch if={c}><Task id=A agent={a} /></Workflow>),
            &["<Branch> is not closed: add </Branch> before </Workflow>"],
        );
        check(
            quote!(<Workflow name="w"><Sequence><Parallel><Task id=A agent={a} /></Workflow>),
            &[
                "<Parallel> is not closed: add </Parallel> before </Workflow>",
                "<Sequence> is not closed: add </Sequence> after its last child, or end the tag with `/>` if it has none",
            ],
        );
        check(
            quote!(<Workflow name="w"><Task id=A agent={a} />),
            &["<Workflow> is not closed: add </Workflow> after its last child, or end the tag with `/>` if it has none"],
        );
        check(
            quote!(<Workflow name="w"><Sequence></Sequence></Workflow>),
            &[],
        );
    }

    #[test]
    fn text_in_container_and_tags_in_task() {
        check(quote!(<Sequence>"hi"</Sequence>), &[TEXT_IN_CONTAINER]);
        check(quote!("hi"), &[TEXT_IN_CONTAINER]);
        check(quote!(<Task id=A><Task id=B /></Task>), &["a <Task> cannot contain <Task>: its children are its prompt (\"text\" and {expr}); put the tag next to the task in a container"]);
        check(
            quote!(<Task id=A>hello</Task>),
            &["prompt text must be a string literal: \"hello\""],
        );
    }

    #[test]
    fn on_max_reached_variant_typo() {
        check(
            quote!(<Ralph on_max_reached=Fial />),
            &["`on_max_reached` is `ReturnLast` or `Fail`, not `Fial`"],
        );
        check(
            quote!(<Workflow on_budget=Parked />),
            &["`on_budget` is `Fail` or `Park`, not `Parked`"],
        );
    }
}
