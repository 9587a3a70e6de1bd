use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

fn main() {
    let _ = REVIEW;
    let _node = workflow! {
        <Sequence>
            <Task id="review"> "Review it." </Task>
        </Sequence>
    };
}
