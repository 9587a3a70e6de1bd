use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

fn main() {
    let _node = workflow! {
        <Task id=REVIEW retries="two" />
    };
}
