use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

#[derive(Output, Serialize, Deserialize, JsonSchema)]
enum Verdict {
    Approve,
    Reject,
}

fn main() {
    let _ = REVIEW;
}
