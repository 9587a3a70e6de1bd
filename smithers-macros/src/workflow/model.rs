//! The `workflow!` model: what the user wrote, parsed permissively with rstml, every tag, prop
//! and expression kept with its span. The model may be invalid; `validate` says why.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use rstml::node::{
    KVAttributeValue, KeyedAttributeValue, Node, NodeAttribute, NodeBlock, NodeName,
};
use syn::spanned::Spanned;
use syn::{Expr, LitStr, Path};

use crate::ctxt::Ctxt;

/// A tag: `<Name props...>children</Name>`.
pub(crate) struct Element {
    /// The tag's path as written (`Task`, `reviews::CodeReview`).
    pub(crate) name: Path,
    /// The name as text, for messages and dispatch.
    pub(crate) name_str: String,
    /// The closing tag's name, if the element was not self-closed.
    pub(crate) close: Option<(String, Span)>,
    /// `<Name ... />`: no closing tag expected.
    pub(crate) self_closed: bool,
    pub(crate) props: Vec<Prop>,
    pub(crate) children: Vec<Child>,
}

impl Element {
    /// The span of the tag's name (where "this tag" errors point).
    pub(crate) fn span(&self) -> Span {
        self.name.span()
    }

    /// The first prop called `name`.
    pub(crate) fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.name == name)
    }
}

/// `name=value`, `name={expr}` or a bare `name` (meaning `true`).
pub(crate) struct Prop {
    pub(crate) name: String,
    pub(crate) span: Span,
    pub(crate) value: PropValue,
}

/// The value of a prop.
pub(crate) enum PropValue {
    /// A bare prop: `continue_on_fail`.
    Flag,
    /// A literal, path or `{expr}` (braces removed when they hold a single expression).
    Expr(Box<Expr>),
    /// A braced block that does not parse yet (kept for rust-analyzer completion).
    Tokens(TokenStream),
}

impl PropValue {
    /// The value as an expression, a bare flag being `true` at `span`.
    pub(crate) fn to_tokens_at(&self, span: Span) -> TokenStream {
        match self {
            PropValue::Flag => quote::quote_spanned!(span=> true),
            PropValue::Expr(e) => e.to_token_stream(),
            PropValue::Tokens(t) => t.clone(),
        }
    }

    /// The string of a string-literal value.
    pub(crate) fn as_str_lit(&self) -> Option<&LitStr> {
        match self.expr()? {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }

    /// The value as a parsed expression, if it is one.
    pub(crate) fn expr(&self) -> Option<&Expr> {
        match self {
            PropValue::Expr(e) => Some(e),
            _ => None,
        }
    }
}

/// A child of a tag.
pub(crate) enum Child {
    Element(Element),
    /// `"text"`.
    Text(LitStr),
    /// `{expr}` (braces removed when they hold a single expression).
    Expr(TokenStream),
    /// `<>...</>`: its children, spliced.
    Fragment(Vec<Child>),
    /// Unquoted words: always an error.
    RawText(Span, String),
}

/// rstml's message for an element that reaches the end of the input without a closing tag.
const RSTML_UNCLOSED: &str = "open tag has no corresponding close tag";

/// Parses the macro input into top-level children, recording rstml's syntax errors.
pub(crate) fn parse(input: TokenStream, cx: &mut Ctxt) -> Vec<Child> {
    let config = rstml::ParserConfig::new()
        .recover_block(true)
        // Mismatched closing tags are reported by `validate` with a friendlier message.
        .element_close_wildcard(|_, _| true);
    let (nodes, diagnostics) = rstml::Parser::new(config)
        .parse_recoverable(input)
        .split_vec();
    for d in diagnostics {
        let err: syn::Error = d.into();
        // An unclosed tag is reported by `validate`, at the tag that is not closed: rstml
        // reports it at the outer tag whose closing tag the inner one took, with a note per child.
        if err.to_string() != RSTML_UNCLOSED {
            cx.push(err);
        }
    }
    nodes.into_iter().filter_map(|n| convert(n, cx)).collect()
}

fn convert(node: Node, cx: &mut Ctxt) -> Option<Child> {
    Some(match node {
        Node::Element(el) => {
            let (name, name_str) = tag_path(&el.open_tag.name, cx)?;
            let self_closed = el.open_tag.is_self_closed();
            let close = el
                .close_tag
                .as_ref()
                .map(|c| (c.name.to_string(), c.name.span()));
            let props = el
                .open_tag
                .attributes
                .into_iter()
                .filter_map(|a| convert_prop(a, cx))
                .collect();
            let children = el
                .children
                .into_iter()
                .filter_map(|c| convert(c, cx))
                .collect();
            Child::Element(Element {
                name,
                name_str,
                close,
                self_closed,
                props,
                children,
            })
        }
        Node::Text(t) => Child::Text(t.value),
        Node::Block(b) => Child::Expr(block_tokens(b)),
        Node::Fragment(f) => Child::Fragment(
            f.children
                .into_iter()
                .filter_map(|c| convert(c, cx))
                .collect(),
        ),
        Node::RawText(r) => {
            let span = r.join_spans().unwrap_or_else(|| r.span());
            Child::RawText(span, r.to_string_best())
        }
        Node::Comment(_) => return None,
        Node::Doctype(d) => {
            cx.error_spanned(d, "a doctype is not a workflow node");
            return None;
        }
        Node::Custom(_) => return None,
    })
}

fn tag_path(name: &NodeName, cx: &mut Ctxt) -> Option<(Path, String)> {
    match name {
        NodeName::Path(p) => {
            let s = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::");
            Some((p.path.clone(), s))
        }
        other => {
            cx.error_spanned(other, format!("`{other}` is not a tag name; tags are `Task`, `Sequence`, ... or a component path"));
            None
        }
    }
}

fn convert_prop(attr: NodeAttribute, cx: &mut Ctxt) -> Option<Prop> {
    let attr = match attr {
        NodeAttribute::Attribute(a) => a,
        NodeAttribute::Block(b) => {
            cx.error_spanned(b, "expected a prop (`name=value`), found a block");
            return None;
        }
    };
    let (name, span) = match &attr.key {
        NodeName::Path(p) if p.path.segments.len() == 1 => {
            let ident = &p.path.segments[0].ident;
            (ident.to_string(), ident.span())
        }
        other => {
            let written = other.to_string();
            let snake = crate::suggest::to_snake_case(&written.replace([':', '.'], "_"));
            cx.error_spanned(
                other,
                format!("`{written}` is not a prop name; props are snake_case: `{snake}`"),
            );
            return None;
        }
    };
    let value = match attr.possible_value {
        KeyedAttributeValue::None => PropValue::Flag,
        KeyedAttributeValue::Value(v) => match v.value {
            KVAttributeValue::Expr(e) => PropValue::Expr(Box::new(unbrace(e))),
            KVAttributeValue::InvalidBraced(b) => PropValue::Tokens(b.to_token_stream()),
        },
        KeyedAttributeValue::Binding(b) => {
            cx.error_spanned(&b, format!("expected `{name}=value`, found arguments"));
            return None;
        }
    };
    Some(Prop { name, span, value })
}

/// `{ expr }` → `expr`, so rustc points at the expression rather than at the braces.
fn unbrace(e: Expr) -> Expr {
    match e {
        Expr::Block(b) if b.attrs.is_empty() && b.label.is_none() => match single_expr(&b.block) {
            Some(inner) => inner,
            None => Expr::Block(b),
        },
        other => other,
    }
}

/// The expression of a block that holds exactly one (`{ x }`, `{ workflow! { .. } }`).
fn single_expr(block: &syn::Block) -> Option<Expr> {
    match block.stmts.as_slice() {
        [syn::Stmt::Expr(e, None)] => Some(e.clone()),
        [syn::Stmt::Macro(m)] if m.semi_token.is_none() && m.attrs.is_empty() => {
            Some(Expr::Macro(syn::ExprMacro {
                attrs: Vec::new(),
                mac: m.mac.clone(),
            }))
        }
        _ => None,
    }
}

fn block_tokens(b: NodeBlock) -> TokenStream {
    match b {
        NodeBlock::ValidBlock(block) => match single_expr(&block) {
            Some(e) => e.to_token_stream(),
            None => block.to_token_stream(),
        },
        other => other.to_token_stream(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    /// Renders the model compactly: `<Tag a b=.. >[children]`.
    fn render(children: &[Child]) -> String {
        children
            .iter()
            .map(render_child)
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn render_child(c: &Child) -> String {
        match c {
            Child::Element(e) => {
                let props: String = e
                    .props
                    .iter()
                    .map(|p| match &p.value {
                        PropValue::Flag => format!(" {}", p.name),
                        PropValue::Expr(x) => format!(" {}={}", p.name, x.to_token_stream()),
                        PropValue::Tokens(t) => format!(" {}=?{}", p.name, t),
                    })
                    .collect();
                let close = match &e.close {
                    Some((n, _)) if *n != e.name_str => format!("</{n}>"),
                    _ => String::new(),
                };
                format!(
                    "<{}{}>[{}]{}",
                    e.name_str,
                    props,
                    render(&e.children),
                    close
                )
            }
            Child::Text(t) => format!("{:?}", t.value()),
            Child::Expr(t) => format!("{{{t}}}"),
            Child::Fragment(cs) => format!("<>[{}]", render(cs)),
            Child::RawText(_, s) => format!("raw({s})"),
        }
    }

    fn check(input: TokenStream, expected: &str, expected_errors: &[&str]) {
        let mut cx = Ctxt::new();
        let model = parse(input, &mut cx);
        assert_eq!(render(&model), expected);
        assert_eq!(cx.messages(), expected_errors);
        let _ = cx.into_compile_errors();
    }

    #[test]
    fn props_keep_literals_paths_exprs_and_flags() {
        check(
            quote!(<Task id=ANALYZE retries=2 agent={claude()} continue_on_fail label="x"></Task>),
            r#"<Task id=ANALYZE retries=2 agent=claude () continue_on_fail label="x">[]"#,
            &[],
        );
    }

    #[test]
    fn keyword_props_parse() {
        check(
            quote!(<Branch if={ok} else={n} />),
            "<Branch if=ok else=n>[]",
            &[],
        );
    }

    #[test]
    fn children_are_text_exprs_and_tags() {
        check(
            quote!(<Sequence><Task id=A>"a" {b}</Task>{more}<>{x}</></Sequence>),
            r#"<Sequence>[<Task id=A>["a" {b}] {more} <>[{x}]]"#,
            &[],
        );
    }

    #[test]
    fn component_paths_parse() {
        check(
            quote!(<reviews::CodeReview glob="src" />),
            r#"<reviews::CodeReview glob="src">[]"#,
            &[],
        );
    }

    #[test]
    fn mismatched_close_tag_is_kept_for_validation() {
        check(
            quote!(<Sequence></Parallel>),
            "<Sequence>[]</Parallel>",
            &[],
        );
    }

    #[test]
    fn unclosed_tag_is_left_to_validation_without_rstml_errors() {
        check(
            quote!(<Workflow><Branch if={c}><Task id=A /></Workflow>),
            "<Workflow>[<Branch if=c>[<Task id=A>[]]</Workflow>]",
            &[],
        );
    }

    #[test]
    fn dashed_prop_suggests_snake_case() {
        check(
            quote!(<Ralph max-iterations=3 />),
            "<Ralph>[]",
            &["`max-iterations` is not a prop name; props are snake_case: `max_iterations`"],
        );
    }

    #[test]
    fn unquoted_text_is_kept_as_raw() {
        check(
            quote!(<Task id=A>hello world</Task>),
            "<Task id=A>[raw(hello world)]",
            &[],
        );
    }
}
