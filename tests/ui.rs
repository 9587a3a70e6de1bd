//! Compile-fail cases of the macros: one file per mistake under `tests/ui/`, each with the
//! `.stderr` rustc prints. The `.stderr` files depend on the compiler's wording, so the test runs
//! only on the toolchain they were made with; regenerate with `TRYBUILD=overwrite`.
#![allow(missing_docs)]

#[rustversion::stable(1.95)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
