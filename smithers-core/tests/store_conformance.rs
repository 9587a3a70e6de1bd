//! The SQLite store passes the backend conformance suite (`store::conformance`), one test per
//! behaviour, each on a fresh database file.
use std::sync::Arc;

use smithers_core::store::{conformance::Backend, Durability, SqliteStore, Store};

struct Sqlite {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
}

impl Backend for Sqlite {
    async fn open(_test: &'static str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(dir.path().join("conformance.db"), Durability::Off)
            .expect("open a fresh SQLite store");
        Some(Sqlite {
            _dir: dir,
            store: Arc::new(store),
        })
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn close(self) {}
}

smithers_core::store_conformance_tests!(Sqlite);
