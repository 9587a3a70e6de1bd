use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

fn main() {
    let _ = REVIEW;
    let _node = workflow! {
        <Workflow name="w">
            <sequence />
        </Workflow>
    };
}
