//! The `smithers` binary: operates runs from the database alone (placeholder).

fn main() {}
