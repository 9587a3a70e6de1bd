use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

fn main() {
    let ok = true;
    let _node = workflow! {
        <Workflow name="w">
            <Branch if={ok}>
                <Task id=REVIEW value={Review { approved: true }} />
            <Task id="after" output=Review value={Review { approved: false }} />
        </Workflow>
    };
}
