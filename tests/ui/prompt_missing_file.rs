use smithers::prelude::*;

#[prompt(path = "no_such_prompt.md")]
struct Implement<'a> {
    unit: &'a str,
}

fn main() {
    let _ = Implement { unit: "parse headers" }.to_string();
}
