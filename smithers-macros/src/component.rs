//! `#[component]`: keeps the function as written and adds a typestate props builder, so
//! `<Name a=1 b={x} />` in `workflow!` becomes `Name::__component_props().a(1).b(x).__call(PhantomData)`.
//!
//! Next to `fn Name` (value namespace) the macro declares `struct Name {}` (type namespace), whose
//! `__component_props()` starts a builder `__NameProps<S0, S1, ..>`: each `Si` is
//! `__private::Missing` until its setter stores `__private::Set(value)`. `__call` requires every state to
//! implement a per-prop trait whose `#[diagnostic::on_unimplemented]` names the missing prop.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::visit_mut::VisitMut;
use syn::{FnArg, GenericParam, Generics, Ident, ItemFn, Pat, Type, WherePredicate};

use crate::ctxt::Ctxt;

/// One parameter of the component: a prop.
struct PropParam {
    name: Ident,
    ty: Type,
}

pub(crate) fn component(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut cx = Ctxt::new();
    if !attr.is_empty() {
        cx.error_spanned(&attr, "`#[component]` takes no arguments");
    }
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            cx.push(syn::Error::new(
                e.span(),
                "`#[component]` goes on a function returning `Node`",
            ));
            let errors = cx.into_compile_errors();
            return quote!(#errors #item);
        }
    };
    let props = params(&func, &mut cx);
    let name = &func.sig.ident;
    if !name
        .to_string()
        .starts_with(|c: char| c.is_ascii_uppercase())
    {
        cx.error(
            name.span(),
            format!(
                "component names start with a capital letter (`{}`), so `workflow!` can tell them from built-in tags",
                capitalise(&name.to_string())
            ),
        );
    }
    if let Some(a) = &func.sig.asyncness {
        cx.error(
            a.span,
            "a component is a plain function that renders nodes; it cannot be `async`",
        );
    }
    func.attrs.push(syn::parse_quote!(#[allow(non_snake_case)]));
    let companion = if cx.has_errors() {
        TokenStream::new()
    } else {
        expand(&func, &props)
    };
    let errors = cx.into_compile_errors();
    quote!(#errors #func #companion)
}

fn capitalise(s: &str) -> String {
    heck::ToUpperCamelCase::to_upper_camel_case(s)
}

fn params(func: &ItemFn, cx: &mut Ctxt) -> Vec<PropParam> {
    let mut out = Vec::new();
    for input in &func.sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                cx.error_spanned(r, "a component is a free function; it cannot take `self`")
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => out.push(PropParam {
                    name: p.ident.clone(),
                    ty: (*t.ty).clone(),
                }),
                other => cx.error_spanned(
                    other,
                    "component parameters are props: write them as `name: Type`",
                ),
            },
        }
    }
    out
}

fn expand(func: &ItemFn, props: &[PropParam]) -> TokenStream {
    let vis = &func.vis;
    let name = &func.sig.ident;
    let span = name.span();
    let builder = format_ident!("__{}Props", name, span = Span::mixed_site());
    let states: Vec<Ident> = (0..props.len())
        .map(|i| format_ident!("__S{}", i, span = Span::mixed_site()))
        .collect();
    let missing = quote!(::smithers::__private::Missing);
    let all_missing = props.iter().map(|_| &missing);
    let field_ix: Vec<syn::Index> = (0..props.len()).map(syn::Index::from).collect();

    let traits: Vec<Ident> = props
        .iter()
        .map(|p| format_ident!("__{}_{}", name, p.name, span = Span::mixed_site()))
        .collect();
    let trait_defs = props.iter().zip(&traits).map(|(p, tr)| {
        let message = format!("component <{name}> is missing the prop `{}`", p.name);
        let label = format!("add `{}=...` to this tag", p.name);
        let ty = &p.ty;
        let note = format!("`{}` has type `{}`", p.name, crate::output::type_string(ty));
        quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #[diagnostic::on_unimplemented(message = #message, label = #label, note = #note)]
            #vis trait #tr<__T> {
                #[doc(hidden)]
                fn __get(self) -> __T;
            }
            #[diagnostic::do_not_recommend]
            impl<__T> #tr<__T> for ::smithers::__private::Set<__T> {
                fn __get(self) -> __T { self.0 }
            }
        }
    });

    let setters = props
        .iter()
        .enumerate()
        .map(|(i, p)| setter(func, &builder, &states, i, p));
    // `__call` names the function itself, so `workflow!` names only the type `Name`: a tag that
    // resolves to nothing (a misspelled built-in) is one error, not one per namespace. Its
    // generics are the function's, with the props' elided lifetimes named and `impl Trait`
    // made type parameters; rustc infers them from the props set. The `PhantomData` of the
    // parameter types gives `__call` the bounds the function's signature implies (`I: 'a` for
    // `&'a Ctx<I>`).
    let mut fresh = Freshen::default();
    let arg_tys: Vec<Type> = props
        .iter()
        .map(|p| {
            let mut ty = p.ty.clone();
            fresh.visit_type_mut(&mut ty);
            ty
        })
        .collect();
    let fn_generics = &func.sig.generics;
    let fn_lifetimes = fn_generics
        .params
        .iter()
        .filter(|g| matches!(g, GenericParam::Lifetime(_)));
    let fn_others = fn_generics
        .params
        .iter()
        .filter(|g| !matches!(g, GenericParam::Lifetime(_)));
    let fresh_lifetimes = &fresh.lifetimes;
    let impls = fresh.impls.iter().map(|(id, bounds)| quote!(#id: #bounds));
    let fn_preds = where_predicates(fn_generics);
    let output = &func.sig.output;
    let call = quote_spanned! {span=>
        impl<#(#states),*> #builder<#(#states),*> {
            /// Calls the component with the props given.
            #[doc(hidden)]
            #[allow(clippy::type_complexity)]
            #vis fn __call<#(#fresh_lifetimes,)* #(#fn_lifetimes,)* #(#fn_others,)* #(#impls),*>(
                self,
                _implied_bounds: ::core::marker::PhantomData<(#(#arg_tys,)*)>,
            ) #output
            where #(#states: #traits<#arg_tys>,)* #(#fn_preds),*
            {
                #name(#(self.#field_ix.__get()),*)
            }
        }
    };

    let all_missing_values = props.iter().map(|_| &missing);
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #name {}

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #builder<#(#states),*>(#(#states),*);

        impl #name {
            /// Starts the props builder of this component (what `workflow!` expands to).
            #[doc(hidden)]
            #vis fn __component_props() -> #builder<#(#all_missing),*> {
                #builder(#(#all_missing_values),*)
            }
        }

        #(#trait_defs)*
        #(#setters)*
        #call
    }
}

/// The setter of prop `i`: only on a builder where that prop is still `Missing`; generic over the
/// function's generics its type mentions, with elided lifetimes named and `impl Trait` made a
/// type parameter, so rustc checks the value against the parameter's type at the prop.
fn setter(
    func: &ItemFn,
    builder: &Ident,
    states: &[Ident],
    i: usize,
    p: &PropParam,
) -> TokenStream {
    let vis = &func.vis;
    let name = &p.name;
    let mut ty = p.ty.clone();
    let mut fresh = Freshen::default();
    fresh.visit_type_mut(&mut ty);
    let mut used = Mentions::default();
    used.visit_type_mut(&mut ty.clone());

    let fn_generics = &func.sig.generics;
    let all_names: Vec<String> = fn_generics.params.iter().map(param_name).collect();
    let included: Vec<&GenericParam> = fn_generics
        .params
        .iter()
        .filter(|g| used.0.contains(&param_name(g)))
        .collect();
    let included_names: Vec<String> = included.iter().map(|g| param_name(g)).collect();
    let preds = where_predicates(fn_generics).into_iter().filter(|w| {
        let mut m = Mentions::default();
        m.visit_where_predicate_mut(&mut (*w).clone());
        m.0.iter()
            .all(|n| !all_names.contains(n) || included_names.contains(n))
    });
    let lifetimes = &fresh.lifetimes;
    let impls = fresh.impls.iter().map(|(id, bounds)| quote!(#id: #bounds));

    let other_states = states
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, s)| s);
    let in_ty = states.iter().enumerate().map(|(j, s)| {
        if j == i {
            quote!(::smithers::__private::Missing)
        } else {
            quote!(#s)
        }
    });
    let out_ty = states.iter().enumerate().map(|(j, s)| {
        if j == i {
            quote!(::smithers::__private::Set<#ty>)
        } else {
            quote!(#s)
        }
    });
    let fields = (0..states.len()).map(|j| {
        if j == i {
            quote!(::smithers::__private::Set(#name))
        } else {
            let ix = syn::Index::from(j);
            quote!(self.#ix)
        }
    });
    let doc = format!("The `{name}` prop.");
    quote! {
        impl<#(#other_states),*> #builder<#(#in_ty),*> {
            #[doc = #doc]
            #[allow(clippy::type_complexity)]
            #vis fn #name<#(#lifetimes,)* #(#included,)* #(#impls),*>(self, #name: #ty) -> #builder<#(#out_ty),*>
            where #(#preds),*
            {
                #builder(#(#fields),*)
            }
        }
    }
}

fn param_name(g: &GenericParam) -> String {
    match g {
        GenericParam::Lifetime(l) => l.lifetime.ident.to_string(),
        GenericParam::Type(t) => t.ident.to_string(),
        GenericParam::Const(c) => c.ident.to_string(),
    }
}

fn where_predicates(g: &Generics) -> Vec<&WherePredicate> {
    g.where_clause
        .iter()
        .flat_map(|w| w.predicates.iter())
        .collect()
}

/// Names elided lifetimes (`&T`, `'_`) and turns `impl Trait` into type parameters.
#[derive(Default)]
struct Freshen {
    lifetimes: Vec<syn::Lifetime>,
    impls: Vec<(
        Ident,
        syn::punctuated::Punctuated<syn::TypeParamBound, syn::Token![+]>,
    )>,
}

impl Freshen {
    fn lifetime(&mut self) -> syn::Lifetime {
        let l = syn::Lifetime::new(&format!("'__l{}", self.lifetimes.len()), Span::mixed_site());
        self.lifetimes.push(l.clone());
        l
    }
}

impl VisitMut for Freshen {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::ImplTrait(it) = ty {
            let id = format_ident!("__Impl{}", self.impls.len(), span = Span::mixed_site());
            self.impls.push((id.clone(), it.bounds.clone()));
            *ty = syn::parse_quote!(#id);
            return;
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
    fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
        if r.lifetime.is_none() {
            r.lifetime = Some(self.lifetime());
        }
        syn::visit_mut::visit_type_reference_mut(self, r);
    }
    fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
        if l.ident == "_" {
            *l = self.lifetime();
        }
    }
    // Elided lifetimes in `fn(&str)` and `Fn(&str)` are higher-ranked: leave them.
    fn visit_type_fn_ptr_mut(&mut self, _: &mut syn::TypeFnPtr) {}
    fn visit_parenthesized_generic_arguments_mut(
        &mut self,
        _: &mut syn::ParenthesizedGenericArguments,
    ) {
    }
}

/// Every identifier (and lifetime name) a piece of syntax mentions.
#[derive(Default)]
struct Mentions(Vec<String>);

impl VisitMut for Mentions {
    fn visit_ident_mut(&mut self, i: &mut Ident) {
        self.0.push(i.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_errors(input: TokenStream, expected: &[&str]) {
        let out = component(TokenStream::new(), input).to_string();
        let got: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !out.contains(&format!("{e:?}")))
            .collect();
        assert!(got.is_empty(), "missing errors {got:?} in {out}");
        if expected.is_empty() {
            assert!(!out.contains("compile_error"), "unexpected error in {out}");
        }
    }

    fn check_setter_type(ty: TokenStream, expected: &str) {
        let mut ty: Type = syn::parse2(ty).unwrap();
        let mut fresh = Freshen::default();
        fresh.visit_type_mut(&mut ty);
        let impls: Vec<String> = fresh
            .impls
            .iter()
            .map(|(i, b)| format!("{i}: {}", quote!(#b)))
            .collect();
        let got = format!("{} / {}", quote!(#ty), impls.join(", "));
        assert_eq!(got, expected);
    }

    #[test]
    fn elided_lifetimes_are_named_and_impl_trait_becomes_generic() {
        check_setter_type(quote!(&Ctx<I>), "& '__l0 Ctx < I > / ");
        check_setter_type(quote!(Foo<'_, &str>), "Foo < '__l0 , & '__l1 str > / ");
        check_setter_type(
            quote!(impl IntoIterator<Item = Node>),
            "__Impl0 / __Impl0: IntoIterator < Item = Node >",
        );
        check_setter_type(quote!(fn(&str) -> Node), "fn (& str) -> Node / ");
    }

    #[test]
    fn valid_component_expands_without_errors() {
        check_errors(
            quote!(
                fn Review<I: Clone>(ctx: &Ctx<I>, glob: &str) -> Node {
                    todo!()
                }
            ),
            &[],
        );
    }

    #[test]
    fn invalid_components_are_errors() {
        check_errors(
            quote!(fn review(glob: &str) -> Node { todo!() }),
            &["component names start with a capital letter (`Review`), so `workflow!` can tell them from built-in tags"],
        );
        check_errors(
            quote!(fn étape_finale(glob: &str) -> Node { todo!() }),
            &["component names start with a capital letter (`ÉtapeFinale`), so `workflow!` can tell them from built-in tags"],
        );
        check_errors(
            quote!(
                async fn Review((a, b): (u8, u8)) -> Node {
                    todo!()
                }
            ),
            &[
                "a component is a plain function that renders nodes; it cannot be `async`",
                "component parameters are props: write them as `name: Type`",
            ],
        );
    }
}
