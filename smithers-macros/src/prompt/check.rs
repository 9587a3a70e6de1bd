//! A check before askama's: every placeholder of a prompt template that names a variable must
//! name a field of the struct (or a name the template binds itself), reported with the
//! template's file and line. askama would report an unknown field too, but through rustc at the
//! `#[prompt]` attribute, without the template line.
//!
//! The check is conservative: it looks only at the variable an expression starts from (`{{ a }}`,
//! `{{ a.b() }}`, `{{ a|upper }}`, `{% if a %}`, `{% for x in a %}`, `{% match a %}`), and any name
//! the template binds anywhere (`for`, `let`, `if let`, `match` arms, macro arguments) counts as
//! known. Whatever it lets through, askama and rustc still check.

use askama_parser::{Ast, Expr, Node, Syntax, WithSpan};

/// Names that exist in every template.
const BUILTIN: &[&str] = &["self", "loop", "caller", "true", "false"];

/// The first placeholder naming neither a field nor a bound name: `(name, line)`.
pub(crate) fn unknown_placeholder(src: &str, fields: &[String]) -> Option<(String, usize)> {
    // A syntax error is askama's to report (it names the file and line).
    let ast = Ast::from_str(src, None, &Syntax::default()).ok()?;
    let mut w = Walk {
        roots: Vec::new(),
        bound: Vec::new(),
    };
    w.nodes(ast.nodes());
    w.roots.into_iter().find_map(|(name, offset)| {
        let known =
            fields.contains(&name) || w.bound.contains(&name) || BUILTIN.contains(&name.as_str());
        let line = src[..offset.min(src.len())].matches('\n').count() + 1;
        (!known).then_some((name, line))
    })
}

struct Walk {
    /// Variables expressions start from, with their byte offset.
    roots: Vec<(String, usize)>,
    /// Names the template binds.
    bound: Vec<String>,
}

impl Walk {
    fn nodes(&mut self, nodes: &[Box<Node<'_>>]) {
        for n in nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &Node<'_>) {
        match n {
            Node::Expr(_, e) => self.expr(e),
            Node::If(i) => {
                for b in &i.branches {
                    if let Some(c) = &b.cond {
                        if let Some(t) = &c.target {
                            self.bind(t);
                        }
                        self.expr(&c.expr);
                    }
                    self.nodes(&b.nodes);
                }
            }
            Node::Loop(l) => {
                self.bind(&l.var);
                self.expr(&l.iter);
                self.nodes(&l.body);
                self.nodes(&l.else_nodes);
            }
            Node::Match(m) => {
                self.expr(&m.expr);
                for arm in &m.arms {
                    for t in &arm.target {
                        self.bind(t);
                    }
                    self.nodes(&arm.nodes);
                }
            }
            Node::Let(l) => {
                self.bind(&l.var);
                match &l.val {
                    askama_parser::node::LetValueOrBlock::Value(e) => self.expr(e),
                    askama_parser::node::LetValueOrBlock::Block { nodes, .. } => self.nodes(nodes),
                }
            }
            Node::Declare(d) => self.bound.push(d.var_name.to_string()),
            Node::Macro(m) => {
                for a in &m.args {
                    self.bound.push(a.name.to_string());
                }
                self.nodes(&m.nodes);
            }
            Node::Call(c) => {
                self.bound
                    .extend(c.caller_args.iter().map(|a| a.to_string()));
                self.nodes(&c.nodes);
            }
            Node::BlockDef(b) => self.nodes(&b.nodes),
            Node::FilterBlock(f) => self.nodes(&f.nodes),
            _ => {}
        }
    }

    /// Records the variable `e` starts from.
    fn expr(&mut self, e: &WithSpan<Box<Expr<'_>>>) {
        let mut cur = e;
        loop {
            match &***cur {
                Expr::Var(name) => {
                    let offset = cur.span().byte_range().map_or(0, |r| r.start);
                    self.roots.push(((*name).to_owned(), offset));
                    return;
                }
                Expr::AssociatedItem(inner, _)
                | Expr::Index(inner, _)
                | Expr::Try(inner)
                | Expr::Group(inner)
                | Expr::Unary(_, inner)
                | Expr::As(inner, _) => cur = inner,
                Expr::Call(c) => cur = &c.path,
                Expr::Filter(f) => match f.arguments.first() {
                    Some(a) => cur = a,
                    None => return,
                },
                Expr::BinOp(b) => {
                    self.expr(&b.rhs);
                    cur = &b.lhs;
                }
                _ => return,
            }
        }
    }

    /// Records the names a pattern binds (`x`, `(a, b)`, `Some(v)`, `Point { x, y }`).
    fn bind(&mut self, t: &impl std::fmt::Debug) {
        // Targets print as `Name("x")`, `Rest(Some("x"))`; read the names off that.
        let text = format!("{t:?}");
        for marker in ["Name(\"", "Rest(Some(\""] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(marker) {
                rest = &rest[i + marker.len()..];
                if let Some(end) = rest.find('"') {
                    self.bound.push(rest[..end].to_owned());
                    rest = &rest[end..];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, fields: &[&str], expected: Option<(&str, usize)>) {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let got = unknown_placeholder(src, &fields);
        assert_eq!(
            got.as_ref().map(|(n, l)| (n.as_str(), *l)),
            expected,
            "{src}"
        );
    }

    #[test]
    fn placeholders_must_name_fields_or_bound_names() {
        check("# {{ unit }}\n{{ goal }}", &["unit", "goal"], None);
        check(
            "# {{ unit }}\n\nsaid: {{ feedback }}",
            &["unit"],
            Some(("feedback", 3)),
        );
        check("{{ unit.len() }} {{ unit|upper }}", &["unit"], None);
        check(
            "{% if feedback.is_empty() %}x{% endif %}",
            &["unit"],
            Some(("feedback", 1)),
        );
        check(
            "{% for i in issues %}- {{ i }}\n{% endfor %}",
            &["issues"],
            None,
        );
        check(
            "{% if let Some(f) = feedback %}{{ f }}{% endif %}",
            &["feedback"],
            None,
        );
        check(
            "{% match kind %}{% when Kind::A %}a{% when Kind::B with (x) %}{{ x }}{% endmatch %}",
            &["kind"],
            None,
        );
        check(
            "{% for i in 0..n %}{{ loop.index }}{% endfor %}",
            &["n"],
            None,
        );
        check("{{ a + b }}", &["a"], Some(("b", 1)));
        // A syntax error is left to askama.
        check("{% if x %}", &[], None);
    }
}
