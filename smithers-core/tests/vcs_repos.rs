//! Snapshots against real temporary repositories, git and jj-colocated: what the user works with
//! (branch, HEAD, index, stash, jj `@` and bookmarks) is untouched by a snapshot, a restore brings
//! every file back byte for byte (added, modified, deleted, binary), and a later edit of the
//! working copy does not move a recorded snapshot. jj comes from `scripts/install-jj.sh`
//! (`SMITHERS_JJ`) or `PATH`; without it the jj tests say `skipped:` on stderr, and fail when
//! `SMITHERS_REQUIRE_EXTERNAL=1`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use smithers_core::vcs::{Backend, Repo};

mod common;
use common::{git, init_repo, jj_or_skip, vcs};

/// Every file of the working copy (outside `.git` and `.jj`) with its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == ".git" || name == ".jj" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

const BINARY: &[u8] = &[0, 159, 146, 150, 255, 0, 1, 2, 10, 13, 0];

/// A git repository on branch `main` with one commit, a stash entry, a staged change and the
/// working-copy edits a run would start from.
fn user_repo() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    init_repo(
        r,
        &[
            ("keep.txt", "kept\n"),
            ("modify.txt", "v1\n"),
            ("delete.txt", "doomed\n"),
            (".gitignore", "ignored.log\n"),
        ],
    );
    std::fs::write(r.join("modify.txt"), "stashed\n").unwrap();
    git(r, &["stash", "-q"]);
    std::fs::write(r.join("staged.txt"), "staged\n").unwrap();
    git(r, &["add", "staged.txt"]);
    d
}

/// What the user works with, which no snapshot may change.
#[derive(Debug, PartialEq)]
struct UserState {
    head: String,
    branch: String,
    index: Vec<u8>,
    stash: String,
    heads: String,
    jj: Option<(String, String, String)>,
}

fn user_state(r: &Path, jj: Option<&Path>) -> UserState {
    UserState {
        head: git(r, &["rev-parse", "HEAD"]),
        branch: git(r, &["symbolic-ref", "-q", "HEAD"]),
        index: std::fs::read(r.join(".git/index")).unwrap(),
        stash: git(r, &["stash", "list", "--format=%H %s"]),
        heads: git(r, &["for-each-ref", "refs/heads", "refs/tags"]),
        jj: jj.map(|jj| {
            let t = |rev: &str, tpl: &str| {
                vcs(
                    jj,
                    r,
                    &[
                        "log",
                        "--ignore-working-copy",
                        "--no-graph",
                        "-r",
                        rev,
                        "-T",
                        tpl,
                    ],
                )
            };
            (
                t("@", "change_id"),
                t("@-", "commit_id"),
                vcs(jj, r, &["bookmark", "list", "--ignore-working-copy"]),
            )
        }),
    }
}

async fn snapshots_leave_the_user_alone_and_restore_byte_for_byte(jj: Option<PathBuf>) {
    let d = user_repo();
    let r = d.path();
    if let Some(jj) = &jj {
        vcs(jj, r, &["git", "init", "--colocate", "--quiet"]);
        vcs(
            jj,
            r,
            &["bookmark", "create", "feature", "-r", "@-", "--quiet"],
        );
    }
    let repo = Repo::find(r).await.unwrap();
    assert_eq!(
        repo.backend,
        if jj.is_some() {
            Backend::Jj
        } else {
            Backend::Git
        }
    );

    // The working copy the step starts from: one file modified, one deleted, one added, a binary.
    std::fs::write(r.join("modify.txt"), "v2\n").unwrap();
    std::fs::remove_file(r.join("delete.txt")).unwrap();
    std::fs::write(r.join("added.txt"), "added\n").unwrap();
    std::fs::write(r.join("blob.bin"), BINARY).unwrap();
    std::fs::create_dir(r.join("dir")).unwrap();
    std::fs::write(r.join("dir/nested.txt"), "nested\n").unwrap();
    if let Some(jj) = &jj {
        // What the user's own next jj command would do anyway: jj takes the working copy in.
        vcs(jj, r, &["util", "snapshot"]);
    }
    let before = user_state(r, jj.as_deref());
    let at_snapshot = files(r);

    let snap = repo.snapshot("t/before", "before the step").await.unwrap();
    assert_eq!(
        user_state(r, jj.as_deref()),
        before,
        "a snapshot moved something"
    );
    assert_eq!(files(r), at_snapshot);
    assert_eq!(snap.commit.len(), 40);
    assert!(snap.commit.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        git(r, &["rev-parse", "refs/smithers/t/before"]),
        snap.commit
    );
    assert_eq!(snap.head.as_deref(), Some(before.head.as_str()));
    if let Some((change, _, _)) = &before.jj {
        assert_ne!(&snap.commit, change, "a jj snapshot must be a commit id");
    }
    let tree = repo.tree_of(&snap.commit).await.unwrap();
    assert_eq!(repo.working_tree().await.unwrap(), tree);

    // The step edits the working copy; later edits must not move the recorded snapshot.
    std::fs::write(r.join("modify.txt"), "v3 by the step\n").unwrap();
    std::fs::write(r.join("keep.txt"), "changed\n").unwrap();
    std::fs::remove_file(r.join("added.txt")).unwrap();
    std::fs::remove_file(r.join("blob.bin")).unwrap();
    std::fs::write(r.join("step-new.txt"), "made by the step\n").unwrap();
    std::fs::write(r.join("ignored.log"), "ignored, left alone\n").unwrap();
    let after = repo.snapshot("t/after", "after the step").await.unwrap();
    assert_ne!(after.commit, snap.commit);
    assert_eq!(
        git(r, &["rev-parse", "refs/smithers/t/before"]),
        snap.commit
    );
    assert_eq!(repo.tree_of(&snap.commit).await.unwrap(), tree);
    assert_eq!(
        git(r, &["show", &format!("{}:modify.txt", snap.commit)]),
        "v2"
    );
    assert_ne!(repo.working_tree().await.unwrap(), tree);
    let diff = repo.diff(&snap.commit, &after.commit).await.unwrap();
    assert!(
        diff.contains("step-new.txt") && diff.contains("+v3 by the step"),
        "{diff}"
    );

    // Garbage collection keeps the snapshots (they are under refs/smithers/).
    if let Some(jj) = &jj {
        vcs(jj, r, &["util", "gc", "--expire=now"]);
    }
    git(r, &["gc", "-q", "--prune=now"]);
    assert!(repo.has_commit(&snap.commit).await);

    let head_state = user_state(r, None);
    repo.restore(&snap.commit).await.unwrap();
    let mut expected = at_snapshot.clone();
    expected.insert("ignored.log".into(), b"ignored, left alone\n".to_vec());
    assert_eq!(files(r), expected, "the restore is not byte for byte");
    assert_eq!(std::fs::read(r.join("blob.bin")).unwrap(), BINARY);
    let restored = user_state(r, None);
    assert_eq!(
        (
            &restored.head,
            &restored.branch,
            &restored.index,
            &restored.stash,
            &restored.heads
        ),
        (
            &head_state.head,
            &head_state.branch,
            &head_state.index,
            &head_state.stash,
            &head_state.heads
        ),
        "a restore moved HEAD, a branch, the index or the stash"
    );
    if let (Some(jj), Some((change, parent, bookmarks))) = (&jj, &before.jj) {
        let now = user_state(r, Some(jj)).jj.unwrap();
        assert_eq!(
            (&now.0, &now.1, &now.2),
            (change, parent, bookmarks),
            "jj @ or a bookmark moved"
        );
    }
    assert_eq!(repo.working_tree().await.unwrap(), tree);
}

#[tokio::test]
async fn git_snapshots_leave_the_user_alone_and_restore_byte_for_byte() {
    snapshots_leave_the_user_alone_and_restore_byte_for_byte(None).await;
}

#[tokio::test]
async fn jj_snapshots_are_commit_ids_that_leave_the_user_alone_and_restore_byte_for_byte() {
    let Some(jj) = jj_or_skip(
        "jj_snapshots_are_commit_ids_that_leave_the_user_alone_and_restore_byte_for_byte",
    ) else {
        return;
    };
    snapshots_leave_the_user_alone_and_restore_byte_for_byte(Some(jj)).await;
}

#[tokio::test]
async fn restoring_a_garbage_collected_snapshot_says_so_and_changes_nothing() {
    let d = user_repo();
    let r = d.path();
    let repo = Repo::find(r).await.unwrap();
    std::fs::write(r.join("x.txt"), "x\n").unwrap();
    let snap = repo.snapshot("t/gone", "gone").await.unwrap();
    git(r, &["update-ref", "-d", "refs/smithers/t/gone"]);
    git(r, &["reflog", "expire", "--expire=now", "--all"]);
    git(r, &["gc", "-q", "--prune=now"]);
    std::fs::write(r.join("x.txt"), "later\n").unwrap();
    let state = files(r);
    let e = repo.restore(&snap.commit).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("snapshot commit {} no longer exists", snap.commit)),
        "{e}"
    );
    assert_eq!(files(r), state);
}

#[tokio::test]
async fn outside_a_repository_there_is_no_repo() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(Repo::find(d.path()).await, None);
}
