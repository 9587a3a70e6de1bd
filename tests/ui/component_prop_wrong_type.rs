use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

#[component]
fn CodeReview(glob: &str, rounds: u32) -> Node {
    let _ = (glob, rounds);
    workflow! { <Task id=REVIEW /> }
}

fn main() {
    let _node = workflow! {
        <CodeReview glob="src" rounds="three" />
    };
}
