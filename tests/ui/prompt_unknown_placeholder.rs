use smithers::prelude::*;

// The template uses `{{ feedback }}`, which this struct has no field for.
#[prompt(path = "prompt_unknown_placeholder.md")]
struct Implement<'a> {
    unit: &'a str,
}

fn main() {
    let _ = Implement { unit: "parse headers" }.to_string();
}
