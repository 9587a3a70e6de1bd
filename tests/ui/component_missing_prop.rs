use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

#[component]
fn CodeReview<I>(ctx: &Ctx<I>, glob: &str) -> Node {
    let _ = (ctx, glob);
    workflow! { <Task id=REVIEW /> }
}

fn main() {
    let ctx = Ctx::empty(());
    let _node = workflow! {
        <CodeReview ctx={&ctx} />
    };
}
