use smithers::prelude::*;

#[derive(Serialize, Deserialize, JsonSchema)]
enum Severity {
    Low,
    High,
}

#[derive(Output, Serialize, Deserialize, JsonSchema)]
struct Finding {
    summary: String,
    severity: Severity,
}

fn main() {
    let _ = Finding::TABLE;
}
