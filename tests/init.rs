//! `smithers init` writes a workflow crate that builds and whose test passes, offline, against
//! this checkout.
//!
//! The scaffold's `smithers-rs` dependency gets a `path` to this checkout (what
//! `smithers init --smithers-path` writes), this workspace's `Cargo.lock` (so no version is
//! resolved anew) and this workspace's dev profile, and it builds into this workspace's target
//! directory: the dependencies compiled for the workspace's own tests are reused and only the
//! scaffold and the few crates whose features differ are compiled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn target_dir() -> PathBuf {
    // Test binaries live in target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn checkout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO"))
        .arg(args[0])
        .arg("--offline")
        .args(&args[1..])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        // The outer `cargo test` sets these for its own package; the scaffold is another one.
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap()
}

#[test]
fn smithers_init_output_builds_and_its_test_passes_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("review-flow");
    let out = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("init")
        .arg(&dir)
        .arg("--smithers-path")
        .arg(checkout())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for f in [
        "Cargo.toml",
        "src/lib.rs",
        "src/main.rs",
        "src/review/mod.rs",
        "src/review/schema.rs",
        "src/review/prompt.md",
        "tests/workflow.rs",
    ] {
        assert!(
            dir.join(f).is_file(),
            "{f} missing; init printed:\n{listed}"
        );
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"review-flow\""), "{manifest}");
    assert!(
        manifest.contains(&format!(
            "smithers-rs = {{ version = \"{}\", path = ",
            env!("CARGO_PKG_VERSION")
        )),
        "{manifest}"
    );

    // Reuse this workspace's resolution and profile (see the module doc).
    std::fs::copy(checkout().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let workspace = std::fs::read_to_string(checkout().join("Cargo.toml")).unwrap();
    let profile = workspace
        .find("[profile.dev]")
        .map_or("", |i| &workspace[i..]);
    std::fs::write(dir.join("Cargo.toml"), format!("{manifest}\n{profile}")).unwrap();

    let started = Instant::now();
    let test = cargo(&dir, &["test", "--quiet", "--test", "workflow"]);
    let stderr = String::from_utf8_lossy(&test.stderr);
    assert!(
        test.status.success(),
        "the scaffold's `cargo test` failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&test.stdout)
    );
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");
    // It runs as a binary too, offline (the scripted reviewer), and writes its database.
    let run = cargo(
        &dir,
        &[
            "run",
            "--quiet",
            "--",
            "--quiet",
            "run",
            "--input",
            r#"{"change": "add retries"}"#,
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(dir.join(".smithers/smithers.db").is_file());
    eprintln!(
        "smithers init scaffold: built, tested and run in {:.0?}",
        started.elapsed()
    );
}

#[test]
fn smithers_init_refuses_a_non_empty_directory_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smithers"))
        .arg("init")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!("error: `{}` already exists and is not empty; pick a new directory (nothing was written)", tmp.path().display())
    );
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}
