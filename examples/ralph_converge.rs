//! A Ralph loop that converges: Newton's method for a square root, one persisted iteration at a
//! time. Each iteration reads the previous estimate with `ctx.latest`, and the loop stops when
//! the estimate is within `tolerance` (or after `max_iterations`, keeping the last estimate).
//!
//! ```text
//! cargo run --example ralph_converge -- run --input '{"square": 2.0}'
//! cargo run --example ralph_converge -- status
//! ```

use smithers::prelude::*;

/// The number whose square root we want.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    square: f64,
    #[serde(default = "default_tolerance")]
    tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-12
}

/// One Newton step.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Estimate {
    /// The current estimate of the root.
    value: f64,
    /// |value² - square|
    error: f64,
}

const STEP: Ref<Estimate> = Ref::new("newton-step");

fn converge(ctx: &Ctx<Input>) -> Node {
    let Input { square, tolerance } = *ctx.input();
    let previous = ctx.latest(STEP);
    let converged = previous.as_ref().is_some_and(|e| e.error <= tolerance);
    let x = previous.map_or(square.max(1.0), |e| e.value);

    workflow! {
        <Workflow name="newton">
            <Ralph id="newton" until={converged} max_iterations=50 on_max_reached=ReturnLast>
                <Task id=STEP run={move |t: TaskCtx| async move {
                    if square < 0.0 {
                        return Err(TaskError::terminal(format!("{square} has no real square root")));
                    }
                    let value = 0.5 * (x + square / x);
                    t.progress(&format!("iteration {}: {value}", t.iteration()));
                    Ok(Estimate { value, error: (value * value - square).abs() })
                }} />
            </Ralph>
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(converge).await
}
