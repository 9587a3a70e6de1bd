use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Patch {
    diff: String,
}

fn main() {
    let _node = workflow! {
        <Task id=REVIEW output=Patch />
    };
}
