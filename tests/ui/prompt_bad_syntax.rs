use smithers::prelude::*;

// The template opens `{% if %}` and never closes it.
#[prompt(path = "prompt_bad_syntax.md")]
struct Implement<'a> {
    unit: &'a str,
}

fn main() {
    let _ = Implement { unit: "parse headers" }.to_string();
}
