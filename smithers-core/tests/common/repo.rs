//! Repositories for the tests of both crates (git and jj run as the user `u <u@u>`, jj found or
//! skipped): included by `smithers-core/tests/common` and, by path, by the facade's
//! `tests/common`, so the two test trees share one copy.

/// jj, or `None` after saying `skipped:` (a failure under `SMITHERS_REQUIRE_EXTERNAL=1`).
pub fn jj_or_skip(test: &str) -> Option<std::path::PathBuf> {
    if let Some(p) = smithers_core::vcs::jj_program().filter(|p| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .is_ok()
    }) {
        return Some(p);
    }
    smithers_core::store::conformance::external_missing(
        test,
        "jj is not installed (run scripts/install-jj.sh and set SMITHERS_JJ, or put jj on PATH)",
    );
    None
}

/// Runs `program` (git or jj) in `dir` as the user `u <u@u>`; a failure fails the test, naming
/// the command and its stderr. Returns its stdout, trimmed.
pub fn vcs(program: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "u")
        .env("GIT_AUTHOR_EMAIL", "u@u")
        .env("GIT_COMMITTER_NAME", "u")
        .env("GIT_COMMITTER_EMAIL", "u@u")
        .env("JJ_USER", "u")
        .env("JJ_EMAIL", "u@u")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// [`vcs`] with git.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    vcs(std::path::Path::new("git"), dir, args)
}

/// Makes `dir` a git repository on branch `main` whose one commit, `init`, holds `files`
/// (name, text).
pub fn init_repo(dir: &std::path::Path, files: &[(&str, &str)]) {
    git(dir, &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "init"]);
}
