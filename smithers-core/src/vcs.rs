//! Working-copy snapshots, so any step or attempt can be rolled back.
//!
//! A snapshot records the whole working copy of the repository containing a directory as a
//! commit, without touching what the user works with:
//! - in a **git** repository it is a commit of the working tree (tracked and untracked files,
//!   `.gitignore` respected) built with a throwaway index and parented on `HEAD`;
//! - in a **jj-colocated** repository (a `.jj` beside `.git`) jj snapshots the working copy into
//!   the user's `@` (as any jj command does; `@` stays the same change and no bookmark moves) and
//!   the snapshot is `@`'s *commit id* — never its change id, which follows later edits of the
//!   working copy;
//! - outside a repository there is none, and the log says so once per process.
//!
//! Either way the commit is kept reachable under `refs/smithers/<name>`, so neither `git gc` nor
//! `jj util gc` drops it, and the user's branch, `HEAD`, index and stash are never touched.
//! [`restore`] puts the working copy back to a snapshot byte for byte, again without moving
//! `HEAD`, a branch or a bookmark. jj is found through `SMITHERS_JJ` or `PATH` ([`jj_program`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::process::Command;

pub use crate::error::VcsError;
use crate::model::stored_names;

stored_names! {
    /// Which tool a repository's snapshots are taken with (its stored name is the step row's
    /// `vcs_backend`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Backend {
        /// A git repository: commits built with a throwaway index.
        Git = "git",
        /// A jj-colocated repository: jj commit ids of the working-copy commit.
        Jj = "jj",
    }
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
    run_tool("git", cmd, dir, args).await
}

async fn run_tool(
    tool: &'static str,
    mut cmd: Command,
    dir: &Path,
    args: &[&str],
) -> Result<String, VcsError> {
    let out = cmd.output().await.map_err(|e| VcsError {
        tool,
        command: args.first().copied().unwrap_or("").to_owned(),
        dir: dir.to_owned(),
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(VcsError {
            tool,
            command: args.join(" "),
            dir: dir.to_owned(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The jj binary: `SMITHERS_JJ` when set, else `jj` found on `PATH`.
pub fn jj_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMITHERS_JJ").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("jj"))
        .find(|p| p.is_file())
}

/// One jj operation at a time per process: parallel tasks snapshotting the same working copy
/// would otherwise race for jj's working-copy lock and fork its operation log.
static JJ_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn jj(jj: &Path, root: &Path, args: &[&str]) -> Result<String, VcsError> {
    let mut cmd = Command::new(jj);
    cmd.arg("-R")
        .arg(root)
        .args(args)
        .args(["--color", "never", "--no-pager"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run_tool("jj", cmd, root, args).await
}

/// The git index of `root`, put back as it was when dropped: jj keeps the index of a colocated
/// repository in step with the working copy (intent-to-add entries for new files), and a
/// snapshot must leave the user's index exactly as it found it.
struct KeepIndex {
    path: PathBuf,
    bytes: Option<Vec<u8>>,
}

impl KeepIndex {
    async fn new(root: &Path) -> Result<Self, VcsError> {
        let git_dir = git(root, &["rev-parse", "--absolute-git-dir"], None).await?;
        let path = PathBuf::from(git_dir).join("index");
        let bytes = std::fs::read(&path).ok();
        Ok(KeepIndex { path, bytes })
    }
}

impl Drop for KeepIndex {
    fn drop(&mut self) {
        let now = std::fs::read(&self.path).ok();
        if now == self.bytes {
            return;
        }
        match &self.bytes {
            Some(b) => {
                let tmp = self.path.with_extension("smithers-restore");
                if std::fs::write(&tmp, b).is_ok() {
                    let _ = std::fs::rename(&tmp, &self.path);
                }
            }
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// A repository a snapshot can be taken of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    /// Root of the work tree.
    pub root: PathBuf,
    /// How its snapshots are taken.
    pub backend: Backend,
    jj: Option<PathBuf>,
}

static NO_REPO_LOGGED: AtomicBool = AtomicBool::new(false);
static NO_JJ_LOGGED: AtomicBool = AtomicBool::new(false);

impl Repo {
    /// The repository containing `dir`: jj when it is jj-colocated and jj is installed, git
    /// otherwise; `None` outside a repository.
    pub async fn find(dir: &Path) -> Option<Repo> {
        let root = PathBuf::from(
            git(dir, &["rev-parse", "--show-toplevel"], None)
                .await
                .ok()?,
        );
        let mut backend = Backend::Git;
        let mut jj = None;
        if root.join(".jj").is_dir() {
            match jj_program() {
                Some(p) => {
                    backend = Backend::Jj;
                    jj = Some(p);
                }
                None => {
                    if !NO_JJ_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(repo = %root.display(), "the repository is jj-colocated but jj is not installed (set SMITHERS_JJ or put jj on PATH); snapshots are git commits instead");
                    }
                }
            }
        }
        Some(Repo { root, backend, jj })
    }

    /// Like [`Repo::find`], logging once per process that `dir` is outside any repository.
    pub async fn find_or_log(dir: &Path) -> Option<Repo> {
        let repo = Repo::find(dir).await;
        if repo.is_none() && !NO_REPO_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::info!(dir = %dir.display(), "not inside a git or jj repository: no working-copy snapshots are taken, so steps cannot be rolled back");
        }
        repo
    }

    /// The commit `HEAD` points at, if any.
    pub async fn head(&self) -> Option<String> {
        git(
            &self.root,
            &["rev-parse", "--verify", "--quiet", "HEAD"],
            None,
        )
        .await
        .ok()
        .filter(|s| !s.is_empty())
    }

    /// Snapshots the working copy and keeps the commit under `refs/smithers/<name>`.
    pub async fn snapshot(&self, name: &str, message: &str) -> Result<Snapshot, VcsError> {
        let head = self.head().await;
        let commit = match self.backend {
            Backend::Jj => self.jj_snapshot().await?,
            Backend::Git => git_snapshot(&self.root, head.as_deref(), message).await?,
        };
        let refname = format!("refs/smithers/{name}");
        git(&self.root, &["update-ref", &refname, &commit], None).await?;
        Ok(Snapshot {
            root: self.root.clone(),
            commit,
            backend: self.backend,
            head,
        })
    }

    /// Keeps `commit` reachable under `refs/smithers/<name>`.
    pub async fn keep(&self, name: &str, commit: &str) -> Result<(), VcsError> {
        let refname = format!("refs/smithers/{name}");
        git(&self.root, &["update-ref", &refname, commit], None)
            .await
            .map(drop)
    }

    /// Whether `commit` still exists in the repository.
    pub async fn has_commit(&self, commit: &str) -> bool {
        git(
            &self.root,
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
            None,
        )
        .await
        .is_ok()
    }

    /// The tree id of the working copy as it is now (with the same rules as a snapshot).
    pub async fn working_tree(&self) -> Result<String, VcsError> {
        let commit = match self.backend {
            Backend::Jj => self.jj_snapshot().await?,
            Backend::Git => {
                let index = TempIndex::new(&self.root).await?;
                if self.head().await.is_some() {
                    git(&self.root, &["read-tree", "HEAD"], Some(&index.0)).await?;
                }
                git(&self.root, &["add", "--all", "--", "."], Some(&index.0)).await?;
                return git(&self.root, &["write-tree"], Some(&index.0)).await;
            }
        };
        self.tree_of(&commit).await
    }

    /// jj snapshots the working copy into `@` (same change, new commit id); returns that commit.
    async fn jj_snapshot(&self) -> Result<String, VcsError> {
        let jj_bin = self.jj.as_deref().unwrap_or(Path::new("jj"));
        let _one = JJ_LOCK.lock().await;
        let _index = KeepIndex::new(&self.root).await?;
        jj(jj_bin, &self.root, &["util", "snapshot", "--quiet"]).await?;
        jj(
            jj_bin,
            &self.root,
            &[
                "log",
                "--ignore-working-copy",
                "--no-graph",
                "-r",
                "@",
                "-T",
                "commit_id",
            ],
        )
        .await
    }

    /// The tree id of `commit`.
    pub async fn tree_of(&self, commit: &str) -> Result<String, VcsError> {
        git(
            &self.root,
            &["rev-parse", "--verify", &format!("{commit}^{{tree}}")],
            None,
        )
        .await
    }

    /// What changed from snapshot `from` to snapshot `to`: a stat summary and the patch.
    pub async fn diff(&self, from: &str, to: &str) -> Result<String, VcsError> {
        git(
            &self.root,
            &["diff", "--stat", "--patch", "--binary", from, to, "--"],
            None,
        )
        .await
    }

    /// Puts the working copy back to `commit`: changed files are restored, files created since
    /// are removed (ignored files are left alone); `HEAD`, branches, bookmarks and the index do
    /// not move. In a jj repository the restore is a jj operation on `@` (so `jj op undo`
    /// takes it back).
    pub async fn restore(&self, commit: &str) -> Result<(), VcsError> {
        if !self.has_commit(commit).await {
            return Err(VcsError {
                tool: "git",
                command: "cat-file".into(),
                dir: self.root.clone(),
                message: format!(
                    "snapshot commit {commit} no longer exists in this repository (was `refs/smithers/` deleted and the repository garbage-collected?); nothing was restored"
                ),
            });
        }
        if let (Backend::Jj, Some(jj_bin)) = (&self.backend, &self.jj) {
            let _one = JJ_LOCK.lock().await;
            let _index = KeepIndex::new(&self.root).await?;
            jj(
                jj_bin,
                &self.root,
                &["restore", "--quiet", "--from", commit],
            )
            .await?;
            return Ok(());
        }
        let index = TempIndex::new(&self.root).await?;
        // The index describes the working tree as it is now, so that `read-tree -u` knows which
        // files to remove; then the tree moves to the snapshot's.
        git(&self.root, &["add", "--all", "--", "."], Some(&index.0)).await?;
        git(
            &self.root,
            &["read-tree", "-u", "--reset", commit],
            Some(&index.0),
        )
        .await?;
        Ok(())
    }
}

async fn git_snapshot(root: &Path, head: Option<&str>, message: &str) -> Result<String, VcsError> {
    let index = TempIndex::new(root).await?;
    // Start from HEAD's tree so that `add --all` only has to hash what changed.
    if head.is_some() {
        git(root, &["read-tree", "HEAD"], Some(&index.0)).await?;
    }
    git(root, &["add", "--all", "--", "."], Some(&index.0)).await?;
    let tree = git(root, &["write-tree"], Some(&index.0)).await?;
    let mut args = vec!["commit-tree", tree.as_str(), "-m", message];
    if let Some(h) = head {
        args.extend(["-p", h]);
    }
    git(root, &args, None).await
}

/// The top of the git work tree containing `dir`, if any.
pub async fn repo_root(dir: &Path) -> Option<PathBuf> {
    Repo::find(dir).await.map(|r| r.root)
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

/// A snapshot: the repository, the commit, and where `HEAD` was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Root of the work tree.
    pub root: PathBuf,
    /// The snapshot commit (a jj commit id in a jj repository, never a change id).
    pub commit: String,
    /// How it was taken.
    pub backend: Backend,
    /// The commit `HEAD` pointed at when it was taken.
    pub head: Option<String>,
}

/// Snapshots the working copy of the repository containing `dir` under `refs/smithers/<name>`.
/// Returns `None` when `dir` is not in a repository.
pub async fn snapshot(dir: &Path, name: &str, message: &str) -> Result<Option<Snapshot>, VcsError> {
    match Repo::find(dir).await {
        Some(repo) => repo.snapshot(name, message).await.map(Some),
        None => Ok(None),
    }
}

/// Puts the working copy of the repository containing `dir` back to `snapshot` (see
/// [`Repo::restore`]). Returns the repository root.
pub async fn restore(dir: &Path, snapshot: &str) -> Result<PathBuf, VcsError> {
    let repo = Repo::find(dir).await.ok_or_else(|| VcsError {
        tool: "git",
        command: "rev-parse".into(),
        dir: dir.to_owned(),
        message: "not inside a git repository".into(),
    })?;
    repo.restore(snapshot).await?;
    Ok(repo.root)
}
/// The ref name (under `refs/smithers/`) of a step's snapshot; unique per snapshot taken.
pub(crate) fn step_ref(run_id: &str, step: &str, iteration: u32, after: bool) -> String {
    format!(
        "{}/steps/{}/{iteration}/{}-{}",
        ref_component(run_id),
        ref_component(step),
        if after { "after" } else { "before" },
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The ref (under `refs/smithers/`) of an attempt's snapshot `phase` (`before` or `after`).
pub(crate) fn attempt_ref(
    run_id: &str,
    node_id: &str,
    iteration: u32,
    attempt: u32,
    phase: &str,
) -> String {
    format!(
        "{}/{}/{iteration}/{attempt}-{phase}",
        ref_component(run_id),
        ref_component(node_id)
    )
}

/// A ref-name-safe form of a run or node id (ids may hold any text).
pub(crate) fn ref_component(id: &str) -> String {
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
        let name = attempt_ref(
            &self.run_id,
            &self.node_id,
            self.iteration,
            self.attempt,
            phase,
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
        return Err(crate::Error::NoSnapshot(format!(
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
        crate::Error::NoSnapshot(format!(
            "node `{node_id}` of run `{run_id}` has no snapshot for iteration {it}{}",
            attempt
                .map(|n| format!(", attempt {n}"))
                .unwrap_or_default()
        ))
    })?;
    let (Some(repo), Some(snap)) = (&chosen.vcs_repo, &chosen.vcs_before) else {
        return Err(crate::Error::InvalidRecord(format!(
            "the snapshot record of node `{node_id}` of run `{run_id}` is incomplete (it names no repository or no commit); the database was edited or is damaged"
        )));
    };
    let root = restore(Path::new(repo), snap).await?;
    Ok(Reverted {
        repo: root,
        snapshot: snap.clone(),
        iteration: it,
        attempt: chosen.attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_round_trip_under_their_stored_names() {
        crate::model::tests::check_stored_names(
            Backend::ALL,
            &["git", "jj"],
            Backend::as_str,
            Backend::parse,
        );
    }

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
