//! Phases, steps and a human gate: build and test the release, then wait for approval before
//! "publishing" it. The run stops as `waiting-approval`; a person decides from any shell.
//!
//! ```text
//! cargo run --example release -- run --input '{"version": "1.2.0"}'
//! cargo run --bin smithers -- status                      # waiting for approval of `publish`
//! cargo run --bin smithers -- approve RUN publish --note "looks good"
//! cargo run --example release -- resume                   # publishes; nothing else runs again
//! cargo run --bin smithers -- steps                       # phases and steps with their timings
//! ```
//! With `--wait-approval` the run keeps waiting instead of stopping.

use smithers::prelude::*;

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Input {
    version: String,
}

/// What a build step produced.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Artifact {
    name: String,
    bytes: i64,
}

/// A check's verdict.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Check {
    passed: bool,
    detail: String,
}

/// Where the release went.
#[derive(Output, Serialize, Deserialize, JsonSchema, Clone, Debug)]
struct Published {
    location: String,
}

const BUILD: Ref<Artifact> = Ref::new("build");
const TEST: Ref<Check> = Ref::new("test");
const PUBLISH: Ref<Published> = Ref::new("publish");

fn release(ctx: &Ctx<Input>) -> Node {
    let version = ctx.input().version.clone();
    let artifact = ctx.output_maybe(BUILD);
    let (v1, v2) = (version.clone(), version.clone());

    workflow! {
        <Workflow name="release">
            <Phase name="build" on_start={|h| h.set_state("release.phase", "build")}>
                <Step name="compile">
                    <Task id=BUILD run={move |_t: TaskCtx| {
                        let name = format!("release-{v1}.tar");
                        async move {
                            let body = format!("release {name}\n").repeat(64);
                            Ok::<_, TaskError>(Artifact { bytes: body.len() as i64, name })
                        }
                    }} />
                </Step>
                <Step name="test">
                    <Task id=TEST run={move |_t: TaskCtx| {
                        let artifact = artifact.clone();
                        async move {
                            let a = artifact.ok_or_else(|| TaskError::terminal("no artifact to test"))?;
                            Ok::<_, TaskError>(Check { passed: a.bytes > 0, detail: format!("{} is {} bytes", a.name, a.bytes) })
                        }
                    }} />
                </Step>
            </Phase>
            <Phase name="ship" on_complete={|h| h.set_state("release.phase", "shipped")}>
                <Step name="publish">
                    <Task id=PUBLISH needs_approval run={move |t: TaskCtx| {
                        let location = format!("releases/{v2} (run {})", t.run_id());
                        async move { Ok::<_, TaskError>(Published { location }) }
                    }} />
                </Step>
            </Phase>
        </Workflow>
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    smithers::cli::main(release).await
}
