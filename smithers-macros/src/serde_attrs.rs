//! The serde attributes `#[derive(Output)]` must agree with: what a field is called in the JSON
//! serde writes, and whether it is there at all.
//!
//! Read with `syn`'s `parse_nested_meta`, key by key, as serde_derive reads them
//! (`serde_derive/src/internals/attr.rs`). Everything else serde accepts is skipped. Malformed
//! serde attributes are serde_derive's to report: reading stops quietly, so the user sees one
//! error, serde's.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, LitStr};

/// Container attributes: `#[serde(rename_all = "...")]`.
#[derive(Default)]
pub(crate) struct Container {
    /// The rule for serialized names (`rename_all = ".."` or `rename_all(serialize = "..")`).
    pub(crate) rename_all: Option<RenameRule>,
}

/// Field attributes.
#[derive(Default)]
pub(crate) struct Field {
    /// The serialized name (`rename = ".."` or `rename(serialize = "..")`).
    pub(crate) rename: Option<LitStr>,
    /// `skip` or `skip_serializing`: the field is not in the JSON, so it has no column.
    pub(crate) skip: bool,
    /// `skip_serializing_if = ".."`: the field may be absent, so its column takes `NULL`.
    pub(crate) maybe_absent: bool,
    /// `flatten`: its fields land in the parent object.
    pub(crate) flatten: Option<Span>,
    /// `with` or `serialize_with`: a function decides the JSON, not the type.
    pub(crate) serialize_with: Option<Span>,
}

impl Container {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> Self {
        let mut out = Container::default();
        for attr in serde_attrs(attrs) {
            let _ = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename_all") {
                    if let Some(rule) = serialize_value(&meta)? {
                        out.rename_all = RenameRule::from_str(&rule.value());
                    }
                    Ok(())
                } else {
                    skip_value(&meta)
                }
            });
        }
        out
    }
}

impl Field {
    pub(crate) fn from_attrs(attrs: &[Attribute]) -> Self {
        let mut out = Field::default();
        for attr in serde_attrs(attrs) {
            let _ = attr.parse_nested_meta(|meta| {
                let path = &meta.path;
                if path.is_ident("rename") {
                    if let Some(name) = serialize_value(&meta)? {
                        out.rename = Some(name);
                    }
                    return Ok(());
                }
                if path.is_ident("skip") || path.is_ident("skip_serializing") {
                    out.skip = true;
                } else if path.is_ident("skip_serializing_if") {
                    out.maybe_absent = true;
                } else if path.is_ident("flatten") {
                    out.flatten = Some(span_of(path));
                } else if path.is_ident("with") || path.is_ident("serialize_with") {
                    out.serialize_with = Some(span_of(path));
                }
                skip_value(&meta)
            });
        }
        out
    }
}

fn serde_attrs(attrs: &[Attribute]) -> impl Iterator<Item = &Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("serde"))
}

fn span_of(path: &syn::Path) -> Span {
    path.segments
        .first()
        .map_or_else(Span::call_site, |s| s.ident.span())
}

/// The serialized side of `key = "x"` or `key(serialize = "x", deserialize = "y")`.
fn serialize_value(meta: &ParseNestedMeta<'_>) -> syn::Result<Option<LitStr>> {
    if meta.input.peek(syn::Token![=]) {
        return Ok(Some(meta.value()?.parse()?));
    }
    let mut ser = None;
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            if inner.path.is_ident("serialize") {
                ser = Some(inner.value()?.parse()?);
                Ok(())
            } else {
                skip_value(&inner)
            }
        })?;
    }
    Ok(ser)
}

/// Consumes whatever follows a key serde knows and we do not need: `= expr` or `(...)`.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// serde's `rename_all` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

impl RenameRule {
    /// The rule named as in serde; `None` for a name serde rejects (serde reports it).
    pub(crate) fn from_str(s: &str) -> Option<Self> {
        Some(match s {
            "lowercase" => RenameRule::Lower,
            "UPPERCASE" => RenameRule::Upper,
            "PascalCase" => RenameRule::Pascal,
            "camelCase" => RenameRule::Camel,
            "snake_case" => RenameRule::Snake,
            "SCREAMING_SNAKE_CASE" => RenameRule::ScreamingSnake,
            "kebab-case" => RenameRule::Kebab,
            "SCREAMING-KEBAB-CASE" => RenameRule::ScreamingKebab,
            _ => return None,
        })
    }

    /// The serialized name of a field, exactly as serde_derive computes it
    /// (`RenameRule::apply_to_field`), but by chars, so a non-ASCII name cannot panic.
    pub(crate) fn apply_to_field(self, field: &str) -> String {
        match self {
            RenameRule::Lower | RenameRule::Snake => field.to_owned(),
            RenameRule::Upper | RenameRule::ScreamingSnake => field.to_ascii_uppercase(),
            RenameRule::Pascal => {
                let mut pascal = String::with_capacity(field.len());
                let mut capitalize = true;
                for ch in field.chars() {
                    if ch == '_' {
                        capitalize = true;
                    } else if capitalize {
                        pascal.push(ch.to_ascii_uppercase());
                        capitalize = false;
                    } else {
                        pascal.push(ch);
                    }
                }
                pascal
            }
            RenameRule::Camel => {
                let pascal = RenameRule::Pascal.apply_to_field(field);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
            RenameRule::Kebab => field.replace('_', "-"),
            RenameRule::ScreamingKebab => field.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn field(attrs: Vec<Attribute>) -> Field {
        Field::from_attrs(&attrs)
    }

    #[test]
    fn field_attributes_are_read_among_others() {
        let f = field(vec![
            parse_quote!(#[serde(default, rename = "fb", alias = "x")]),
            parse_quote!(#[serde(skip_serializing_if = "Option::is_none")]),
        ]);
        assert_eq!(f.rename.map(|l| l.value()).as_deref(), Some("fb"));
        assert!(f.maybe_absent && !f.skip && f.flatten.is_none() && f.serialize_with.is_none());

        let f = field(vec![
            parse_quote!(#[serde(rename(deserialize = "in", serialize = "out"))]),
        ]);
        assert_eq!(f.rename.map(|l| l.value()).as_deref(), Some("out"));

        let f = field(vec![parse_quote!(#[serde(rename(deserialize = "in"))])]);
        assert!(f.rename.is_none());

        assert!(field(vec![parse_quote!(#[serde(skip)])]).skip);
        assert!(field(vec![parse_quote!(#[serde(skip_serializing)])]).skip);
        assert!(!field(vec![parse_quote!(#[serde(skip_deserializing)])]).skip);
        assert!(field(vec![parse_quote!(#[serde(flatten)])])
            .flatten
            .is_some());
        assert!(field(vec![parse_quote!(#[serde(with = "m")])])
            .serialize_with
            .is_some());
        assert!(field(vec![parse_quote!(#[serde(serialize_with = "f")])])
            .serialize_with
            .is_some());
    }

    #[test]
    fn container_rename_all_in_both_forms() {
        let c = Container::from_attrs(&[
            parse_quote!(#[serde(deny_unknown_fields, rename_all = "kebab-case")]),
        ]);
        assert_eq!(c.rename_all, Some(RenameRule::Kebab));
        let c = Container::from_attrs(&[
            parse_quote!(#[serde(rename_all(serialize = "PascalCase", deserialize = "camelCase"))]),
        ]);
        assert_eq!(c.rename_all, Some(RenameRule::Pascal));
        let c = Container::from_attrs(&[parse_quote!(#[serde(rename_all = "Bogus")])]);
        assert_eq!(c.rename_all, None);
    }

    #[test]
    fn malformed_serde_attributes_are_left_to_serde() {
        let f = field(vec![parse_quote!(#[serde(rename = 3)])]);
        assert!(f.rename.is_none());
    }

    fn check_rule(rule: &str, field: &str, expected: &str) {
        let r = RenameRule::from_str(rule).unwrap();
        assert_eq!(r.apply_to_field(field), expected, "{rule} of {field:?}");
    }

    #[test]
    fn rename_rules_match_serde_and_take_non_ascii_names() {
        check_rule("lowercase", "error_count", "error_count");
        check_rule("UPPERCASE", "error_count", "ERROR_COUNT");
        check_rule("PascalCase", "error_count", "ErrorCount");
        check_rule("camelCase", "error_count", "errorCount");
        check_rule("snake_case", "error_count", "error_count");
        check_rule("SCREAMING_SNAKE_CASE", "error_count", "ERROR_COUNT");
        check_rule("kebab-case", "error_count", "error-count");
        check_rule("SCREAMING-KEBAB-CASE", "error_count", "ERROR-COUNT");
        check_rule("camelCase", "_private_x", "privateX");
        check_rule("PascalCase", "été_chaud", "étéChaud");
        check_rule("camelCase", "é_x", "éX");
    }
}
