use smithers::prelude::*;

#[prompt(path = "prompt_missing_field.md")]
struct Implement<'a> {
    unit: &'a str,
    feedback: Option<&'a str>,
}

fn main() {
    // `feedback` is not given.
    let _ = Implement { unit: "parse headers" }.to_string();
}
