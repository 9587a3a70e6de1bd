//! `#[derive(Output)]`: a struct's table name and columns, from its fields and serde attributes.
//!
//! The derive decides names, not kinds: each column's kind and nullability are
//! `<FieldType as ColumnType>::{KIND, NULLABLE}`, resolved by the type checker (so a type alias
//! of `i64` is an `INTEGER`), unless the field says `#[output(json)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Data, DeriveInput, Fields, GenericArgument, Generics, LitStr, PathArguments, Type};

use crate::ctxt::Ctxt;
use crate::serde_attrs;
use crate::suggest::{is_sql_identifier, to_snake_case};

/// Columns every output table has; a field may not use these names.
const RESERVED: [&str; 3] = ["run_id", "node_id", "iteration"];

/// A column as the derive sees it.
struct ColumnModel {
    /// The serialized name of the field.
    name: String,
    /// The field's type, asked for its `ColumnType`.
    ty: Type,
    /// Where the kind comes from.
    kind: KindSource,
    /// `skip_serializing_if`: the value may be missing, so the column takes `NULL` whatever
    /// the type.
    maybe_absent: bool,
    rust_type: String,
}

/// How a column's kind is decided.
#[derive(Debug, PartialEq)]
enum KindSource {
    /// `<T as ColumnType>`.
    Type,
    /// `#[output(json)]`: JSON, nullable when the type is written `Option<..>`.
    Json { nullable: bool },
}

pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::new();
    let input: DeriveInput = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let (table, columns) = model(&input, &mut cx);
    let name = &input.ident;
    let mut generics = input.generics.clone();
    for c in &columns {
        if c.kind == KindSource::Type && mentions_type_param(&c.ty, &input.generics) {
            let ty = &c.ty;
            generics.make_where_clause().predicates.push(
                syn::parse_quote_spanned!(ty.span()=> #ty: ::smithers::__private::ColumnType),
            );
        }
    }
    let (impl_g, ty_g, where_g) = generics.split_for_impl();
    let cols = columns.iter().map(|c| {
        let ColumnModel {
            name,
            ty,
            kind,
            maybe_absent,
            rust_type,
        } = c;
        match kind {
            // One use of `ty: ColumnType`, spanned at the type: one error if it has none.
            KindSource::Type => quote_spanned! {ty.span()=>
                ::smithers::__private::column::<#ty>(#name, #rust_type, #maybe_absent)
            },
            KindSource::Json { nullable } => {
                let nullable = *nullable || *maybe_absent;
                quote! {
                    ::smithers::__private::Column {
                        name: #name,
                        kind: ::smithers::__private::ColumnKind::Json,
                        nullable: #nullable,
                        rust_type: #rust_type,
                    }
                }
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
    let container = serde_attrs::Container::from_attrs(&input.attrs);
    let mut columns = Vec::new();
    for field in &fields.named {
        let Some(ident) = &field.ident else { continue };
        let serde = serde_attrs::Field::from_attrs(&field.attrs);
        let json = field_is_json(&field.attrs, cx);
        if serde.skip {
            continue;
        }
        if let Some(span) = serde.flatten {
            cx.error(span, "`#[serde(flatten)]` fields are not supported in outputs: each field must be one column");
            continue;
        }
        let (name, span) = match &serde.rename {
            Some(lit) => (lit.value(), lit.span()),
            None => {
                let raw = ident.to_string();
                let raw = raw.strip_prefix("r#").unwrap_or(&raw).to_owned();
                let name = match container.rename_all {
                    Some(rule) => rule.apply_to_field(&raw),
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
        let kind = if json {
            KindSource::Json {
                nullable: option_inner(&field.ty).is_some(),
            }
        } else {
            if let Some(span) = serde.serialize_with {
                cx.error(span, format!("field `{name}` is serialized by a function, so its type does not say what its column holds; add `#[output(json)]` to store it as JSON"));
            }
            KindSource::Type
        };
        columns.push(ColumnModel {
            name,
            ty: field.ty.clone(),
            kind,
            maybe_absent: serde.maybe_absent,
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

/// Whether the field says `#[output(json)]`; anything else in `#[output(..)]` is an error.
fn field_is_json(attrs: &[syn::Attribute], cx: &mut Ctxt) -> bool {
    let mut json = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("output")) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("json") {
                json = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown `output` attribute on a field; expected `#[output(json)]` (store the field as JSON)",
                ))
            }
        });
        if let Err(e) = res {
            cx.push(e);
        }
    }
    json
}

/// `T` in a type written `Option<T>`.
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

/// Whether `ty` names one of the struct's type parameters (then the impl needs
/// `ty: ColumnType`).
fn mentions_type_param(ty: &Type, generics: &Generics) -> bool {
    struct Finder<'a> {
        params: Vec<&'a syn::Ident>,
        found: bool,
    }
    impl VisitMut for Finder<'_> {
        fn visit_path_mut(&mut self, p: &mut syn::Path) {
            if let Some(first) = p.segments.first() {
                if self.params.contains(&&first.ident) {
                    self.found = true;
                }
            }
            syn::visit_mut::visit_path_mut(self, p);
        }
    }
    let params: Vec<_> = generics.type_params().map(|t| &t.ident).collect();
    if params.is_empty() {
        return false;
    }
    let mut f = Finder {
        params,
        found: false,
    };
    // `visit_mut` on a copy: syn is built with it already (the `visit` feature is not).
    f.visit_type_mut(&mut ty.clone());
    f.found
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

    /// `(name, source, maybe_absent, rust type)`; source is "type", "json" or "json?" (nullable).
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
            .map(|c| {
                let source = match c.kind {
                    KindSource::Type => "type",
                    KindSource::Json { nullable: false } => "json",
                    KindSource::Json { nullable: true } => "json?",
                };
                (
                    c.name.as_str(),
                    source,
                    c.maybe_absent,
                    c.rust_type.as_str(),
                )
            })
            .collect();
        assert_eq!(got, columns);
        assert_eq!(cx.messages(), errors);
        let _ = cx.into_compile_errors();
    }

    #[test]
    fn kinds_are_left_to_the_type_unless_the_field_says_json() {
        check(
            quote!(
                struct AnalysisReport {
                    a: Id,
                    b: Option<Vec<(u8, String)>>,
                    #[output(json)]
                    c: Severity,
                    #[output(json)]
                    d: Option<Severity>,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    e: Option<u8>,
                    g: &'static str,
                }
            ),
            "analysis_report",
            &[
                ("a", "type", false, "Id"),
                ("b", "type", false, "Option<Vec<(u8, String)>>"),
                ("c", "json", false, "Severity"),
                ("d", "json?", false, "Option<Severity>"),
                ("e", "type", true, "Option<u8>"),
                ("g", "type", false, "&'static str"),
            ],
            &[],
        );
    }

    #[test]
    fn serde_renames_skips_and_table_override() {
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
                    #[serde(default, skip_serializing)]
                    scratch: u8,
                    #[serde(rename(serialize = "outName", deserialize = "in_name"))]
                    r#type: String,
                }
            ),
            "reviews",
            &[
                ("isOk", "type", false, "bool"),
                ("fb", "type", false, "String"),
                ("outName", "type", false, "String"),
            ],
            &[],
        );
    }

    #[test]
    fn invalid_names_and_reserved_columns_are_errors() {
        check(
            quote!(#[output(table = "bad-table")] struct X { iteration: u32, #[serde(rename = "a b")] c: u8 }),
            "bad-table",
            &[("iteration", "type", false, "u32"), ("a b", "type", false, "u8")],
            &[
                "`bad-table` is not a valid table name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
                "`iteration` is a reserved column of every output table (run_id, node_id, iteration); rename the field or add `#[serde(rename = \"...\")]`",
                "`a b` is not a valid column name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
            ],
        );
    }

    #[test]
    fn non_ascii_identifiers_are_reported_not_panicked_on() {
        check(
            quote!(#[serde(rename_all = "camelCase")] struct Été { é_x: u8, données: u8 }),
            "été",
            &[("éX", "type", false, "u8"), ("données", "type", false, "u8")],
            &[
                "`été` is not a valid table name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
                "`éX` is not a valid column name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
                "`données` is not a valid column name: use letters, digits and `_` (not starting with a digit), at most 64 characters",
            ],
        );
    }

    #[test]
    fn flatten_serialize_with_and_unknown_field_attributes_are_errors() {
        check(
            quote!(struct X {
                #[serde(flatten)] inner: Inner,
                #[serde(with = "humantime_serde")] wait: Duration,
                #[serde(with = "humantime_serde")] #[output(json)] wait2: Duration,
                #[output(jsn)] y: u8,
            }),
            "x",
            &[("wait", "type", false, "Duration"), ("wait2", "json", false, "Duration"), ("y", "type", false, "u8")],
            &[
                "`#[serde(flatten)]` fields are not supported in outputs: each field must be one column",
                "field `wait` is serialized by a function, so its type does not say what its column holds; add `#[output(json)]` to store it as JSON",
                "unknown `output` attribute on a field; expected `#[output(json)]` (store the field as JSON)",
            ],
        );
    }

    #[test]
    fn enums_and_tuple_structs_are_rejected() {
        check(quote!(enum E { A }), "e", &[], &["`#[derive(Output)]` is for structs: an output is one table row; wrap the enum in a struct field (stored as JSON)"]);
        check(quote!(struct T(u8);), "t", &[], &["`#[derive(Output)]` needs named fields: each field is a column; a tuple struct has no column names"]);
    }

    #[test]
    fn generic_fields_get_a_column_type_bound() {
        let out = derive(quote!(
            struct W<T> {
                a: T,
                b: Vec<T>,
                c: u8,
            }
        ));
        let s = out.to_string();
        assert!(s.contains("where T : :: smithers :: __private :: ColumnType , Vec < T > : :: smithers :: __private :: ColumnType"), "{s}");
    }
}
