//! `#[derive(Output)]`: a struct's table name and columns, from its fields and serde attributes.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Data, DeriveInput, Fields, GenericArgument, LitStr, PathArguments, Type};

use crate::ctxt::Ctxt;
use crate::suggest::{is_sql_identifier, to_snake_case};

/// Columns every output table has; a field may not use these names.
const RESERVED: [&str; 3] = ["run_id", "node_id", "iteration"];

/// A column as the derive sees it.
#[derive(Debug, PartialEq)]
struct ColumnModel {
    name: String,
    kind: &'static str,
    nullable: bool,
    rust_type: String,
}

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::new();
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let (table, columns) = model(&input, &mut cx);
    let name = &input.ident;
    let (impl_g, ty_g, where_g) = input.generics.split_for_impl();
    let cols = columns.iter().map(|c| {
        let ColumnModel {
            name,
            kind,
            nullable,
            rust_type,
        } = c;
        let kind = syn::Ident::new(kind, Span::call_site());
        quote! {
            ::smithers::__private::Column {
                name: #name,
                kind: ::smithers::__private::ColumnKind::#kind,
                nullable: #nullable,
                rust_type: #rust_type,
            }
        }
    });
    let errors = cx.into_compile_errors();
    quote_spanned! {name.span()=>
        #errors
        impl #impl_g ::smithers::__private::Output for #name #ty_g #where_g {
            const TABLE: &'static str = #table;
            const COLUMNS: &'static [::smithers::__private::Column] = &[#(#cols),*];
        }
    }
}

/// The table name and columns, with every problem recorded in `cx`.
fn model(input: &DeriveInput, cx: &mut Ctxt) -> (String, Vec<ColumnModel>) {
    let table = table_name(input, cx);
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => f,
            Fields::Unnamed(_) => {
                cx.error(input.ident.span(), "`#[derive(Output)]` needs named fields: each field is a column; a tuple struct has no column names");
                return (table, Vec::new());
            }
            Fields::Unit => {
                cx.error(
                    input.ident.span(),
                    "`#[derive(Output)]` needs named fields: a unit struct has no columns",
                );
                return (table, Vec::new());
            }
        },
        Data::Enum(e) => {
            cx.error(
                e.enum_token.span,
                "`#[derive(Output)]` is for structs: an output is one table row; wrap the enum in a struct field (stored as JSON)",
            );
            return (table, Vec::new());
        }
        Data::Union(u) => {
            cx.error(
                u.union_token.span,
                "`#[derive(Output)]` is for structs with named fields",
            );
            return (table, Vec::new());
        }
    };
    let rename_all = serde_value(&input.attrs, "rename_all", cx);
    let mut columns = Vec::new();
    for field in &fields.named {
        let Some(ident) = &field.ident else { continue };
        if serde_flag(&field.attrs, "skip") || serde_flag(&field.attrs, "skip_serializing") {
            continue;
        }
        if serde_flag(&field.attrs, "flatten") {
            cx.error(ident.span(), "`#[serde(flatten)]` fields are not supported in outputs: each field must be one column");
            continue;
        }
        let (name, span) = match serde_value(&field.attrs, "rename", cx) {
            Some(lit) => (lit.value(), lit.span()),
            None => {
                let raw = ident.to_string();
                let raw = raw.strip_prefix("r#").unwrap_or(&raw).to_owned();
                let name = match &rename_all {
                    Some(rule) => apply_rename_all(&raw, &rule.value()).unwrap_or_else(|| {
                        cx.error(
                            rule.span(),
                            format!("unknown `rename_all` rule {:?}", rule.value()),
                        );
                        raw.clone()
                    }),
                    None => raw,
                };
                (name, ident.span())
            }
        };
        if RESERVED.contains(&name.as_str()) {
            cx.error(span, format!("`{name}` is a reserved column of every output table (run_id, node_id, iteration); rename the field or add `#[serde(rename = \"...\")]`"));
        } else if !is_sql_identifier(&name) {
            cx.error(span, format!("`{name}` is not a valid column name: use letters, digits and `_` (not starting with a digit), at most 64 characters"));
        }
        let (kind, nullable) = column_kind(&field.ty);
        columns.push(ColumnModel {
            name,
            kind,
            nullable,
            rust_type: type_string(&field.ty),
        });
    }
    (table, columns)
}

fn table_name(input: &DeriveInput, cx: &mut Ctxt) -> String {
    let mut table = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("output")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("table") {
                let lit: LitStr = meta.value()?.parse()?;
                table = Some((lit.value(), lit.span()));
                Ok(())
            } else {
                Err(meta.error("unknown `output` attribute; expected `#[output(table = \"...\")]`"))
            }
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
    let (name, span) =
        table.unwrap_or_else(|| (to_snake_case(&input.ident.to_string()), input.ident.span()));
    if !is_sql_identifier(&name) {
        cx.error(span, format!("`{name}` is not a valid table name: use letters, digits and `_` (not starting with a digit), at most 64 characters"));
    }
    name
}

/// `#[serde(key = "value")]` on any of `attrs`; other serde keys are skipped.
fn serde_value(attrs: &[syn::Attribute], key: &str, cx: &mut Ctxt) -> Option<LitStr> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(key) {
                if let Ok(v) = meta.value() {
                    match v.parse::<LitStr>() {
                        Ok(lit) => found = Some(lit),
                        // `rename(serialize = "..", deserialize = "..")` and the like: not simple.
                        Err(_) => {
                            return Err(meta
                                .error(format!("only `{key} = \"...\"` is supported on outputs")))
                        }
                    }
                } else {
                    return Err(
                        meta.error(format!("only `{key} = \"...\"` is supported on outputs"))
                    );
                }
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                meta.parse_nested_meta(|_| Ok(()))?;
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
    found
}

/// Whether `#[serde(flag)]` is present.
fn serde_flag(attrs: &[syn::Attribute], flag: &str) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("serde"))
        .any(|a| {
            let mut hit = false;
            let _ = a.parse_nested_meta(|meta| {
                if meta.path.is_ident(flag) && !meta.input.peek(syn::Token![=]) {
                    hit = true;
                } else if meta.input.peek(syn::Token![=]) {
                    let _: syn::Expr = meta.value()?.parse()?;
                } else if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|_| Ok(()))?;
                }
                Ok(())
            });
            hit
        })
}

/// serde's `rename_all` rules, applied to a snake_case field name.
fn apply_rename_all(field: &str, rule: &str) -> Option<String> {
    let pascal = || -> String {
        field
            .split('_')
            .map(|w| w[..1.min(w.len())].to_uppercase() + &w[1.min(w.len())..])
            .collect()
    };
    Some(match rule {
        "lowercase" | "snake_case" => field.to_owned(),
        "UPPERCASE" | "SCREAMING_SNAKE_CASE" => field.to_ascii_uppercase(),
        "PascalCase" => pascal(),
        "camelCase" => {
            let p = pascal();
            p[..1.min(p.len())].to_lowercase() + &p[1.min(p.len())..]
        }
        "kebab-case" => field.replace('_', "-"),
        "SCREAMING-KEBAB-CASE" => field.replace('_', "-").to_ascii_uppercase(),
        _ => return None,
    })
}

/// The column kind of a field type, and whether it is nullable (`Option<T>`).
fn column_kind(ty: &Type) -> (&'static str, bool) {
    if let Some(inner) = option_inner(ty) {
        return (column_kind(inner).0, true);
    }
    let kind = match ty {
        Type::Reference(r) if matches!(&*r.elem, Type::Path(p) if p.path.is_ident("str")) => "Text",
        Type::Path(p) if p.qself.is_none() => match p.path.segments.last() {
            Some(seg) if seg.arguments.is_empty() => match seg.ident.to_string().as_str() {
                "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => {
                    "Integer"
                }
                "bool" => "Bool",
                "f32" | "f64" => "Real",
                "String" => "Text",
                _ => "Json",
            },
            _ => "Json",
        },
        Type::Group(g) => return column_kind(&g.elem),
        Type::Paren(p) => return column_kind(&p.elem),
        _ => "Json",
    };
    (kind, false)
}

fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != "Option" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// The type as written, without the spaces of token printing: `Vec<String>`.
pub(crate) fn type_string(ty: &Type) -> String {
    let s = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            let keep = matches!(prev, Some(p) if p.is_alphanumeric() || p == '_' || p == ',' || p == '\'')
                && matches!(next, Some(n) if n.is_alphanumeric() || n == '_' || n == '(' || n == '&');
            if !keep {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        input: TokenStream,
        table: &str,
        columns: &[(&str, &str, bool, &str)],
        errors: &[&str],
    ) {
        let mut cx = Ctxt::new();
        let di: DeriveInput = syn::parse2(input).unwrap();
        let (t, cols) = model(&di, &mut cx);
        assert_eq!(t, table);
        let got: Vec<_> = cols
            .iter()
            .map(|c| (c.name.as_str(), c.kind, c.nullable, c.rust_type.as_str()))
            .collect();
        assert_eq!(got, columns);
        assert_eq!(cx.messages(), errors);
        let _ = cx.into_compile_errors();
    }

    #[test]
    fn field_types_map_to_column_kinds() {
        check(
            quote!(
                struct AnalysisReport {
                    a: i64,
                    b: bool,
                    c: f32,
                    d: String,
                    e: Option<u8>,
                    f: Vec<String>,
                    g: &'static str,
                    h: Option<Vec<(u8, String)>>,
                    i: std::collections::HashMap<String, i32>,
                }
            ),
            "analysis_report",
            &[
                ("a", "Integer", false, "i64"),
                ("b", "Bool", false, "bool"),
                ("c", "Real", false, "f32"),
                ("d", "Text", false, "String"),
                ("e", "Integer", true, "Option<u8>"),
                ("f", "Json", false, "Vec<String>"),
                ("g", "Text", false, "&'static str"),
                ("h", "Json", true, "Option<Vec<(u8, String)>>"),
                ("i", "Json", false, "std::collections::HashMap<String, i32>"),
            ],
            &[],
        );
    }

    #[test]
    fn serde_renames_and_table_override() {
        check(
            quote!(
                #[output(table = "reviews")]
                #[serde(rename_all = "camelCase")]
                struct Review {
                    is_ok: bool,
                    #[serde(rename = "fb")]
                    feedback: String,
                    #[serde(skip)]
                    cache: u8,
                }
            ),
            "reviews",
            &[
                ("isOk", "Bool", false, "bool"),
                ("fb", "Text", false, "String"),
            ],
            &[],
        );
    }

    #[test]
    fn invalid_names_and_reserved_columns_are_errors() {
        check(
            quote!(#[output(table = "bad-table")] struct X { iteration: u32, #[serde(rename = "a b")] c: u8 }),
            "bad-table",
            &[("iteration", "Integer", false, "u32"), ("a b", "Integer", false, "u8")],
            &[
                "`bad-table` is not a valid table name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
                "`iteration` is a reserved column of every output table (run_id, node_id, iteration); rename the field or add `#[serde(rename = \"...\")]`",
                "`a b` is not a valid column name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
            ],
        );
    }

    #[test]
    fn enums_and_tuple_structs_are_rejected() {
        check(quote!(enum E { A }), "e", &[], &["`#[derive(Output)]` is for structs: an output is one table row; wrap the enum in a struct field (stored as JSON)"]);
        check(quote!(struct T(u8);), "t", &[], &["`#[derive(Output)]` needs named fields: each field is a column; a tuple struct has no column names"]);
    }
}
