use smithers::prelude::*;

fn main() {
    let _node = workflow! {
        <Workflow name="w">
            <Sequense />
        </Workflow>
    };
}
