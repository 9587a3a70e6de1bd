//! Every backend passes the conformance suite (`store::conformance`), one test per behaviour:
//! SQLite on a fresh database file, PostgreSQL in a fresh schema of the test server (skipped,
//! saying so, when no server is reachable; a failure under `SMITHERS_REQUIRE_EXTERNAL=1`).

mod sqlite {
    use std::sync::Arc;

    use smithers_core::clock::Clock;
    use smithers_core::store::{conformance::Backend, Durability, SqliteStore, Store};

    struct Sqlite {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
    }

    impl Backend for Sqlite {
        async fn open(_test: &'static str, clock: Arc<dyn Clock>) -> Option<Self> {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = SqliteStore::open(dir.path().join("conformance.db"), Durability::Off)
                .expect("open a fresh SQLite store")
                .with_clock(clock);
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
}

mod postgres {
    smithers_core::store_conformance_tests!(smithers_core::store::conformance::PostgresBackend);
}
