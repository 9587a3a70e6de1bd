//! Working-copy snapshots around agent attempts, so any attempt can be reverted.
//!
//! In a git repository a snapshot is a commit of the whole working tree (tracked and untracked
//! files, `.gitignore` respected) built with a throwaway index, parented on `HEAD` and kept
//! under `refs/smithers/<run>/<node>/<iteration>/<attempt>-<when>`. The user's branch, index
//! and working tree are never touched by a snapshot. [`restore`] puts the working tree back to a
//! snapshot, again without touching `HEAD` or the index.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// What a snapshot failure says: which command, in which directory, and git's message.
#[derive(Debug, thiserror::Error)]
#[error("git {command} in `{dir}` failed: {message}")]
pub struct VcsError {
    /// The git subcommand.
    pub command: String,
    /// The working directory.
    pub dir: PathBuf,
    /// stderr of git, or the spawn error.
    pub message: String,
}

async fn git(dir: &Path, args: &[&str], index: Option<&Path>) -> Result<String, VcsError> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(i) = index {
        cmd.env("GIT_INDEX_FILE", i);
    }
    // Snapshots must not depend on the user's identity being configured.
    cmd.env("GIT_AUTHOR_NAME", "smithers")
        .env("GIT_AUTHOR_EMAIL", "smithers@localhost");
    cmd.env("GIT_COMMITTER_NAME", "smithers")
        .env("GIT_COMMITTER_EMAIL", "smithers@localhost");
    let out = cmd.output().await.map_err(|e| VcsError {
        command: args.first().copied().unwrap_or("").to_owned(),
        dir: dir.to_owned(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(VcsError {
            command: args.join(" "),
            dir: dir.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The top of the git work tree containing `dir`, if any.
pub async fn repo_root(dir: &Path) -> Option<PathBuf> {
    git(dir, &["rev-parse", "--show-toplevel"], None)
        .await
        .ok()
        .map(PathBuf::from)
}

/// A throwaway index file inside `.git`, removed on drop.
struct TempIndex(PathBuf);

impl TempIndex {
    async fn new(root: &Path) -> Result<Self, VcsError> {
        let git_dir = git(root, &["rev-parse", "--absolute-git-dir"], None).await?;
        Ok(TempIndex(PathBuf::from(git_dir).join(format!(
            "smithers-index-{}",
            uuid::Uuid::new_v4().simple()
        ))))
    }
}

impl Drop for TempIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A snapshot: the repository and the commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Root of the work tree.
    pub root: PathBuf,
    /// The snapshot commit.
    pub commit: String,
}

/// Snapshots the working copy of the repository containing `dir` under `refs/smithers/<name>`.
/// Returns `None` when `dir` is not in a git repository.
pub async fn snapshot(dir: &Path, name: &str, message: &str) -> Result<Option<Snapshot>, VcsError> {
    let Some(root) = repo_root(dir).await else {
        return Ok(None);
    };
    let index = TempIndex::new(&root).await?;
    // Start from HEAD's tree so that `add --all` only has to hash what changed.
    let head = git(&root, &["rev-parse", "--verify", "--quiet", "HEAD"], None)
        .await
        .ok();
    if head.is_some() {
        git(&root, &["read-tree", "HEAD"], Some(&index.0)).await?;
    }
    git(&root, &["add", "--all", "--", "."], Some(&index.0)).await?;
    let tree = git(&root, &["write-tree"], Some(&index.0)).await?;
    let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
    if let Some(h) = &head {
        args.extend(["-p", h.as_str()]);
    }
    let commit = git(&root, &args, None).await?;
    let refname = format!("refs/smithers/{name}");
    git(&root, &["update-ref", &refname, &commit], None).await?;
    Ok(Some(Snapshot { root, commit }))
}

/// Puts the working tree of the repository containing `dir` back to `snapshot`: changed files
/// are restored, files created since are removed (ignored files are left alone). `HEAD`, the
/// branch and the index are not touched. Returns the repository root.
pub async fn restore(dir: &Path, snapshot: &str) -> Result<PathBuf, VcsError> {
    let root = repo_root(dir).await.ok_or_else(|| VcsError {
        command: "rev-parse".into(),
        dir: dir.to_owned(),
        message: "not inside a git repository".into(),
    })?;
    git(
        &root,
        &["cat-file", "-e", &format!("{snapshot}^{{commit}}")],
        None,
    )
    .await?;
    let index = TempIndex::new(&root).await?;
    // The index describes the working tree as it is now, so that `read-tree -u` knows which
    // files to remove; then the tree moves to the snapshot's.
    git(&root, &["add", "--all", "--", "."], Some(&index.0)).await?;
    git(
        &root,
        &["read-tree", "-u", "--reset", snapshot],
        Some(&index.0),
    )
    .await?;
    Ok(root)
}

/// A ref-name-safe form of a run or node id (ids may hold any text).
fn ref_component(id: &str) -> String {
    let clean: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean == id {
        clean
    } else {
        use sha2::Digest;
        format!(
            "{clean}-{}",
            &hex::encode(sha2::Sha256::digest(id.as_bytes()))[..8]
        )
    }
}

/// The snapshots of one agent attempt, recorded on its attempt row as they are taken.
#[derive(Clone)]
pub(crate) struct AttemptSnapshots {
    pub(crate) store: std::sync::Arc<dyn crate::store::Store>,
    pub(crate) run_id: String,
    /// The driver's lease: a snapshot is recorded only while it holds the run.
    pub(crate) fence: crate::store::FenceToken,
    pub(crate) node_id: String,
    pub(crate) iteration: u32,
    pub(crate) attempt: u32,
    pub(crate) dir: PathBuf,
}

impl AttemptSnapshots {
    /// Takes the `before` or `after` snapshot; a failure is logged, never fatal to the attempt.
    pub(crate) async fn take(&self, before: bool) {
        let phase = if before { "before" } else { "after" };
        let name = format!(
            "{}/{}/{}/{}-{phase}",
            ref_component(&self.run_id),
            ref_component(&self.node_id),
            self.iteration,
            self.attempt
        );
        let message = format!(
            "smithers: {phase} attempt {} of node `{}` (iteration {}) in run {}",
            self.attempt, self.node_id, self.iteration, self.run_id
        );
        let snap = match snapshot(&self.dir, &name, &message).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, node_id = %self.node_id, "working-copy snapshot failed; this attempt cannot be reverted");
                return;
            }
        };
        let mut b = crate::store::WriteBatch::new(&self.run_id).fenced(&self.fence);
        b.push(crate::store::Write::AttemptVcs {
            node_id: self.node_id.clone(),
            iteration: self.iteration,
            attempt: self.attempt,
            repo: snap.root.display().to_string(),
            before: before.then(|| snap.commit.clone()),
            after: (!before).then_some(snap.commit),
        });
        if let Err(e) = self.store.write(b).await {
            tracing::warn!(error = %e, "could not record a working-copy snapshot");
        }
    }
}

/// What [`revert`] restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reverted {
    /// The repository root.
    pub repo: PathBuf,
    /// The snapshot the working tree now matches.
    pub snapshot: String,
    /// The node's iteration.
    pub iteration: u32,
    /// The attempt whose `before` snapshot was restored.
    pub attempt: u32,
}

/// Undoes what a node's agent did to the working copy: restores the snapshot taken before its
/// attempt `attempt` (by default the first attempt of its latest iteration, undoing all of that
/// iteration's attempts).
pub async fn revert(
    store: &dyn crate::store::Store,
    run_id: &str,
    node_id: &str,
    iteration: Option<u32>,
    attempt: Option<u32>,
) -> crate::Result<Reverted> {
    let attempts = store.attempts(run_id).await?;
    let mut mine: Vec<_> = attempts
        .iter()
        .filter(|a| a.node_id == node_id && a.vcs_before.is_some())
        .collect();
    if mine.is_empty() {
        return Err(crate::Error::Other(format!(
            "node `{node_id}` of run `{run_id}` has no working-copy snapshot: only agents that edit files \
             (the coding-agent CLIs) are snapshotted, inside a git repository"
        )));
    }
    let it = iteration.unwrap_or_else(|| mine.iter().map(|a| a.iteration).max().unwrap_or(0));
    mine.retain(|a| a.iteration == it);
    let chosen = match attempt {
        Some(n) => mine.iter().find(|a| a.attempt == n),
        None => mine.iter().min_by_key(|a| a.attempt),
    }
    .ok_or_else(|| {
        crate::Error::Other(format!(
            "node `{node_id}` of run `{run_id}` has no snapshot for iteration {it}{}",
            attempt
                .map(|n| format!(", attempt {n}"))
                .unwrap_or_default()
        ))
    })?;
    let (Some(repo), Some(snap)) = (&chosen.vcs_repo, &chosen.vcs_before) else {
        return Err(crate::Error::Other(
            "the snapshot record is incomplete".into(),
        ));
    };
    let root = restore(Path::new(repo), snap)
        .await
        .map_err(|e| crate::Error::Other(e.to_string()))?;
    Ok(Reverted {
        repo: root,
        snapshot: snap.clone(),
        iteration: it,
        attempt: chosen.attempt,
    })
}

/// Undoes what a whole phase or step did to the working copy: restores the snapshot taken
/// before the earliest agent attempt of its tasks (in its iteration).
pub async fn revert_step(
    store: &dyn crate::store::Store,
    run_id: &str,
    step_id: i64,
) -> crate::Result<Reverted> {
    let step = store.step(run_id, step_id).await?;
    let attempts = store.attempts(run_id).await?;
    let first = attempts
        .iter()
        .filter(|a| step.contains(a) && a.vcs_before.is_some())
        .min_by(|a, b| a.started_at.cmp(&b.started_at))
        .ok_or_else(|| {
            crate::Error::Other(format!(
                "{} `{}` (step {step_id}) of run `{run_id}` has no working-copy snapshot: none of its tasks is an agent that edits files",
                step.kind, step.name
            ))
        })?;
    revert(
        store,
        run_id,
        &first.node_id,
        Some(first.iteration),
        Some(first.attempt),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sh(dir: &Path, args: &[&str]) {
        git(dir, args, None).await.unwrap();
    }

    #[tokio::test]
    async fn snapshot_and_restore_leave_head_and_index_alone() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        sh(root, &["init", "-q"]).await;
        std::fs::write(root.join("a.txt"), "one").unwrap();
        std::fs::write(root.join(".gitignore"), "ignored.txt\n").unwrap();
        sh(root, &["add", "a.txt", ".gitignore"]).await;
        sh(
            root,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "init",
            ],
        )
        .await;
        let head = git(root, &["rev-parse", "HEAD"], None).await.unwrap();

        std::fs::write(root.join("a.txt"), "two").unwrap();
        std::fs::write(root.join("new.txt"), "untracked").unwrap();
        let snap = snapshot(root, "run/node/0/1-before", "before")
            .await
            .unwrap()
            .unwrap()
            .commit;
        assert_eq!(
            git(
                root,
                &["rev-parse", "refs/smithers/run/node/0/1-before"],
                None
            )
            .await
            .unwrap(),
            snap
        );
        assert_eq!(git(root, &["rev-parse", "HEAD"], None).await.unwrap(), head);
        assert_eq!(
            git(root, &["diff", "--cached", "--name-only"], None)
                .await
                .unwrap(),
            ""
        );

        // An "agent" edits, deletes and creates files.
        std::fs::write(root.join("a.txt"), "three").unwrap();
        std::fs::remove_file(root.join("new.txt")).unwrap();
        std::fs::write(root.join("agent.txt"), "created").unwrap();
        std::fs::write(root.join("ignored.txt"), "keep me").unwrap();

        restore(root, &snap).await.unwrap();
        assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "two");
        assert_eq!(
            std::fs::read_to_string(root.join("new.txt")).unwrap(),
            "untracked"
        );
        assert!(!root.join("agent.txt").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("ignored.txt")).unwrap(),
            "keep me"
        );
        assert_eq!(git(root, &["rev-parse", "HEAD"], None).await.unwrap(), head);
        assert_eq!(
            git(root, &["diff", "--cached", "--name-only"], None)
                .await
                .unwrap(),
            ""
        );
    }

    #[tokio::test]
    async fn outside_a_repository_there_is_no_snapshot() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(snapshot(d.path(), "x", "m").await.unwrap(), None);
    }
}
