use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Review {
    approved: bool,
}

fn main() {
    let _node = workflow! {
        <Workflow name="w">
            <Paralel max_concurrency=2>
                <Task id="a" output=Review value={Review { approved: true }} />
                <Task id="b" output=Review value={Review { approved: false }} />
            </Paralel>
        </Workflow>
    };
}
