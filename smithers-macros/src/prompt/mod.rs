//! `#[prompt(path = "implement.md")]`: a prompt template kept in a file beside the Rust file
//! that declares its struct, compiled and checked by askama.
//!
//! The attribute only resolves the path (relative to the declaring file, as `include_str!`
//! does) and checks that the file exists; everything else is askama's `#[derive(Template)]`,
//! reached through `::smithers::__private::askama` so users need no askama dependency.

use std::path::PathBuf;

mod check;

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::{DeriveInput, LitStr};

pub(crate) fn prompt(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut path: Option<LitStr> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("path") {
            path = Some(meta.value()?.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown `prompt` argument: expected `path = \"file.md\"`"))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, attr) {
        return with_error(item, e);
    }
    let Some(path) = path else {
        return with_error(
            item,
            syn::Error::new(
                Span::call_site(),
                "`#[prompt]` needs the template file: `#[prompt(path = \"implement.md\")]`, \
                 relative to this file",
            ),
        );
    };
    let input: DeriveInput = match syn::parse2(item.clone()) {
        Ok(i) => i,
        Err(e) => return with_error(item, e),
    };
    let (full, base) = resolve(&path.value());
    if !full.is_file() {
        let e = syn::Error::new(
            path.span(),
            format!(
                "prompt template `{}` not found in {base} (a `#[prompt]` path is relative to the \
                 file that declares the struct); create it or fix `path`",
                path.value(),
            ),
        );
        return fallback(&input, e);
    }
    if let syn::Data::Struct(syn::DataStruct {
        fields: syn::Fields::Named(named),
        ..
    }) = &input.data
    {
        let fields: Vec<String> = named
            .named
            .iter()
            .filter_map(|f| f.ident.as_ref().map(|i| i.to_string()))
            .collect();
        let src = std::fs::read_to_string(&full).unwrap_or_default();
        if let Some((name, line)) = check::unknown_placeholder(&src, &fields) {
            let listed: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            let e = syn::Error::new(
                path.span(),
                format!(
                    "prompt template `{}` line {line}: `{name}` is not a field of `{}` (its fields: {}); \
                     add the field or fix the placeholder",
                    path.value(),
                    input.ident,
                    if listed.is_empty() { "none".to_owned() } else { listed.join(", ") },
                ),
            );
            return fallback(&input, e);
        }
    }
    let full = LitStr::new(&full.to_string_lossy(), path.span());
    quote_spanned! {path.span()=>
        #[derive(::smithers::__private::askama::Template)]
        #[template(path = #full, escape = "none", askama = ::smithers::__private::askama)]
        #input
    }
}

/// The template's absolute path, and what it is relative to (for the error: the declaring
/// file's name, stable across machines).
fn resolve(path: &str) -> (PathBuf, String) {
    let file = proc_macro::Span::call_site().local_file();
    match file
        .as_ref()
        .and_then(|f| Some((f.parent()?, f.file_name()?)))
    {
        Some((dir, name)) => {
            let dir = if dir.is_absolute() {
                dir.to_path_buf()
            } else {
                // rustc was given a path relative to the package.
                manifest_dir().join(dir)
            };
            (
                dir.join(path),
                format!("the directory of `{}`", name.to_string_lossy()),
            )
        }
        None => (
            manifest_dir().join(path),
            "the package directory".to_owned(),
        ),
    }
}

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn with_error(item: TokenStream, e: syn::Error) -> TokenStream {
    let e = e.to_compile_error();
    quote!(#e #item)
}

/// The struct unchanged with an empty `Display`, so its uses compile and the only error is `e`.
fn fallback(input: &DeriveInput, e: syn::Error) -> TokenStream {
    let e = e.to_compile_error();
    let name = &input.ident;
    let (ig, tg, wc) = input.generics.split_for_impl();
    quote! {
        #e
        #input
        impl #ig ::core::fmt::Display for #name #tg #wc {
            fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::result::Result::Ok(())
            }
        }
    }
}
