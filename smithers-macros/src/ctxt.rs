//! The error context every macro validates into: collects each `syn::Error` with its span so a
//! macro reports all problems at once, then emits them beside a best-effort expansion.

use proc_macro2::TokenStream;
use quote::ToTokens;

/// Collected errors. Emit them with [`Ctxt::into_compile_errors`]; dropping an unchecked context
/// with errors in it is a bug in the macro, caught in debug builds.
#[derive(Default)]
pub(crate) struct Ctxt {
    errors: Vec<syn::Error>,
    checked: bool,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt::default()
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: proc_macro2::Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    /// Records an error spanning `tokens`.
    pub(crate) fn error_spanned(&mut self, tokens: impl ToTokens, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new_spanned(tokens, msg));
    }

    /// Records an already built error.
    pub(crate) fn push(&mut self, err: syn::Error) {
        self.errors.push(err);
    }

    /// The messages collected so far (for tests).
    #[cfg(test)]
    pub(crate) fn messages(&self) -> Vec<String> {
        self.errors.iter().map(|e| e.to_string()).collect()
    }

    /// Whether any error was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// `compile_error!` invocations, one per error, each at its span.
    pub(crate) fn into_compile_errors(mut self) -> TokenStream {
        self.checked = true;
        std::mem::take(&mut self.errors)
            .iter()
            .map(syn::Error::to_compile_error)
            .collect()
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !self.checked && !self.errors.is_empty() && !std::thread::panicking() {
            debug_assert!(
                false,
                "smithers-macros: error context dropped with unreported errors"
            );
        }
    }
}
