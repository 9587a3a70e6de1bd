use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

struct Plain {
    text: String,
}

fn main() {
    let _ = REVIEW;
    let _node = workflow! {
        <Task id="plain" output=Plain />
    };
}
