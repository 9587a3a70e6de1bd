use smithers::prelude::*;

#[derive(Output, Serialize, Deserialize, JsonSchema, Clone)]
struct Review {
    approved: bool,
}

const REVIEW: Ref<Review> = Ref::new("review");

fn main() {
    let _node = workflow! {
        <Task id=REVIEW value={Review { approved: true }}
              run={|_t| async move { Ok::<_, String>(Review { approved: false }) }} />
    };
}
