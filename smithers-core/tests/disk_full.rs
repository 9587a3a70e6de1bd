//! A full disk: the commit that cannot be written fails the run, the failure is still recorded
//! (with an error naming the database) because the store frees its space reserve, or as soon as
//! there is room again; the file stays sound, and once there is space `resume` finishes the run.
//!
//! The disk is real: a 2 MiB tmpfs mounted for each test (needs root; otherwise the test says
//! `skipped`, or fails under `SMITHERS_REQUIRE_EXTERNAL=1`), filled by a task of the run.
mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use smithers_core::engine::{Engine, EngineOptions};
use smithers_core::node::{Sequence, Task, Workflow};
use smithers_core::store::conformance::external_missing;
use smithers_core::store::{Durability, RunStatus, SqliteStore, Store};
use smithers_core::{Ctx, Node};

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl SmallDisk {
    fn mount(test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("disk");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&mnt)
            .output();
        match mounted {
            Ok(o) if o.status.success() => Some(SmallDisk { _dir: dir, mnt }),
            Ok(o) => {
                let why = format!(
                    "cannot mount a small tmpfs to fill (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                external_missing(test, &why);
                None
            }
            Err(e) => {
                external_missing(test, &format!("cannot run mount: {e}"));
                None
            }
        }
    }

    fn db(&self) -> PathBuf {
        self.mnt.join("smithers.db")
    }

    fn filler(&self) -> PathBuf {
        self.mnt.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

/// Writes to `path` until the disk is full.
fn fill(path: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![7u8; 16 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
}

/// `a`, then `fill` (fills the disk with `filler`, then returns an output too big to fit), then
/// `b`. `free_after`: a moment after the disk is full, the filler is deleted again.
fn workflow(
    filler: Option<PathBuf>,
    free_after: Option<Duration>,
) -> impl Fn(&Ctx<()>) -> Node + Send + Sync + 'static {
    move |_ctx| {
        let filler = filler.clone();
        Workflow::new()
            .name("disk")
            .child(
                Sequence::new()
                    .child(Task::<Num>::new().id("a").value(num(1)).build())
                    .child(
                        Task::<Num>::new()
                            .id("fill")
                            .run(move |_t| {
                                let filler = filler.clone();
                                async move {
                                    if let Some(filler) = filler {
                                        fill(&filler);
                                        if let Some(d) = free_after {
                                            let f = filler.clone();
                                            std::thread::spawn(move || {
                                                std::thread::sleep(d);
                                                std::fs::remove_file(f).unwrap();
                                            });
                                        }
                                    }
                                    Ok::<_, String>(Num {
                                        n: 2,
                                        note: Some("x".repeat(64 * 1024)),
                                    })
                                }
                            })
                            .build(),
                    )
                    .child(Task::<Num>::new().id("b").value(num(3)).build())
                    .build(),
            )
            .build()
    }
}

fn open(db: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(db, Durability::Full).unwrap())
}

fn reserve(db: &Path) -> PathBuf {
    db.with_file_name("smithers.db-reserve")
}

/// The error a full disk gives, naming the database.
fn disk_full_error(db: &Path, sqlite: &str) -> String {
    format!(
        "the disk holding database `{}` is full ({sqlite}); free some space, then `resume` continues the run",
        db.display()
    )
}

fn check_db(db: &Path) -> (String, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let rows: i64 = c
        .query_row("SELECT COUNT(*) FROM num", [], |r| r.get(0))
        .unwrap();
    (integrity, rows)
}

async fn assert_recorded_failure(store: &Arc<dyn Store>, run_id: &str, expected: &str) {
    let run = store.run(run_id).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.error.as_deref()),
        (RunStatus::Failed, Some(expected)),
        "status shows the failure"
    );
    let events = store.events(run_id, 0).await.unwrap();
    let last = events.last().map(|e| e.event.kind.name());
    assert_eq!(last, Some("run_failed"));
}

/// Resumes after the filler is gone: the run finishes with one output per node.
async fn resume_finishes(db: &Path, run_id: &str) {
    let store = open(db);
    assert!(reserve(db).exists(), "the next open puts the reserve back");
    let engine = Engine::new(store.clone(), workflow(None, None));
    let report = engine.resume(Some(run_id)).await.unwrap();
    assert_eq!(report.status, RunStatus::Finished, "{report:?}");
    assert_eq!(check_db(db), ("ok".into(), 3), "one output per node");
}

#[tokio::test]
async fn a_full_disk_fails_the_run_and_the_reserve_makes_room_to_record_it() {
    let Some(disk) =
        SmallDisk::mount("a_full_disk_fails_the_run_and_the_reserve_makes_room_to_record_it")
    else {
        return;
    };
    let db = disk.db();
    let store = open(&db);
    assert!(
        reserve(&db).exists(),
        "the store keeps a reserve beside the database"
    );
    let engine = Engine::new(store.clone(), workflow(Some(disk.filler()), None));
    let e = engine.run_with_id("full", ()).await.unwrap_err();
    assert_eq!(e.code(), "E_DISK_FULL");
    let expected = disk_full_error(&db, "commit failed: database or disk is full");
    assert_eq!(e.to_string(), expected);
    assert!(!reserve(&db).exists(), "the reserve was released");
    assert_recorded_failure(&store, "full", &expected).await;
    assert_eq!(check_db(&db), ("ok".into(), 1), "only `a`'s output");
    drop(engine);
    drop(store);
    std::fs::remove_file(disk.filler()).unwrap();
    resume_finishes(&db, "full").await;
}

#[tokio::test]
async fn without_a_reserve_the_failure_is_recorded_as_soon_as_there_is_room() {
    let test = "without_a_reserve_the_failure_is_recorded_as_soon_as_there_is_room";
    let Some(disk) = SmallDisk::mount(test) else {
        return;
    };
    let db = disk.db();
    let store = open(&db);
    std::fs::remove_file(reserve(&db)).unwrap();
    let engine = Engine::new(
        store.clone(),
        workflow(Some(disk.filler()), Some(Duration::from_millis(700))),
    )
    .with_options(EngineOptions {
        failure_retry: Duration::from_secs(30),
        ..EngineOptions::default()
    });
    let e = engine.run_with_id("full", ()).await.unwrap_err();
    let expected = disk_full_error(&db, "commit failed: database or disk is full");
    assert_eq!(e.to_string(), expected);
    assert!(!disk.filler().exists(), "recorded only once there was room");
    assert_recorded_failure(&store, "full", &expected).await;
    assert_eq!(check_db(&db), ("ok".into(), 1));
    drop(engine);
    drop(store);
    resume_finishes(&db, "full").await;
}
