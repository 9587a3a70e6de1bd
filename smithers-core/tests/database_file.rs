//! The database file itself: a database written by a newer schema is refused with both versions
//! named and left unchanged; a file that is not a database, or is damaged, is named in the error.
use std::path::Path;

use smithers_core::store::{Durability, SqliteStore};
use smithers_core::Error;

fn open(path: &Path) -> Result<SqliteStore, Error> {
    SqliteStore::open(path, Durability::Off)
}

fn supported(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("SELECT MAX(version) FROM _smithers_migrations", [], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The rows and pragmas a refused open must leave as they were.
fn fingerprint(path: &Path) -> (i64, Vec<(i64, String)>, String) {
    let c = rusqlite::Connection::open(path).unwrap();
    let user_version: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mut st = c
        .prepare("SELECT version, name FROM _smithers_migrations ORDER BY version")
        .unwrap();
    let migrations = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let integrity: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    (user_version, migrations, integrity)
}

#[test]
fn a_migration_newer_than_the_binary_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("newer.db");
    drop(open(&db).unwrap());
    let known = supported(&db);
    let newer = known + 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO _smithers_migrations (version, name, checksum, applied_at)
             VALUES (?1, 'from_the_future', 'x', '2030-01-01T00:00:00Z')",
            [newer],
        )
        .unwrap();
    let before = fingerprint(&db);
    let e = open(&db).err().expect("a newer schema is refused");
    assert_eq!(e.code(), "E_SCHEMA_TOO_NEW");
    assert_eq!(
        e.to_string(),
        format!(
            "database `{}` has schema version {newer}, newer than the {known} this binary knows: it was written by a newer smithers; upgrade smithers (or the workflow binary) to use it. Nothing was changed",
            db.display()
        )
    );
    assert_eq!(
        fingerprint(&db),
        before,
        "the refused database is unchanged"
    );
    assert_eq!(before.2, "ok");
}

#[test]
fn a_higher_user_version_is_refused_and_the_binary_records_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("uv.db");
    drop(open(&db).unwrap());
    let known = supported(&db);
    assert_eq!(
        fingerprint(&db).0,
        known,
        "user_version mirrors the newest migration"
    );
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", known + 5)
        .unwrap();
    let before = fingerprint(&db);
    let e = open(&db).err().expect("a higher user_version is refused");
    assert_eq!(
        e.to_string(),
        format!(
            "database `{}` has schema version {}, newer than the {known} this binary knows: it was written by a newer smithers; upgrade smithers (or the workflow binary) to use it. Nothing was changed",
            db.display(),
            known + 5
        )
    );
    assert_eq!(fingerprint(&db), before);
}

#[test]
fn a_file_that_is_not_a_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("notes.txt");
    let text = "these are notes, not a database\n".repeat(200);
    std::fs::write(&db, &text).unwrap();
    let e = open(&db).err().expect("not a database");
    assert_eq!(e.code(), "E_DB_DAMAGED");
    assert_eq!(
        e.to_string(),
        format!(
            "database `{}` cannot be used: file is not a database. It is not a smithers database or it is damaged: pass the right --db, or restore the file from a copy (`sqlite3 <file> .recover` saves what is still readable)",
            db.display()
        )
    );
    assert_eq!(
        std::fs::read_to_string(&db).unwrap(),
        text,
        "the file is untouched"
    );
}

#[test]
fn a_damaged_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("damaged.db");
    drop(open(&db).unwrap());
    {
        // Fold the WAL into the file, then overwrite every page after the first (the schema's
        // own page survives, the tables' pages do not).
        let c = rusqlite::Connection::open(&db).unwrap();
        let mode: String = c
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    assert!(bytes.len() > 2 * page, "the database has several pages");
    for b in &mut bytes[page..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    let e = open(&db).err().expect("a damaged database is refused");
    assert_eq!(e.code(), "E_DB_DAMAGED", "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "database `{}` cannot be used: database disk image is malformed. It is not a smithers database or it is damaged: pass the right --db, or restore the file from a copy (`sqlite3 <file> .recover` saves what is still readable)",
            db.display()
        )
    );
}
