use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Attempt {
    iteration: u32,
    note: String,
}

fn main() {
    let _ = REVIEW;
}
