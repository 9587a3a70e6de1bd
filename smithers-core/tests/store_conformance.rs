//! The SQLite store passes the backend conformance suite (`store::conformance`).
use std::sync::Arc;

use smithers_core::store::{conformance, Durability, SqliteStore, Store};

#[tokio::test]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join(format!("c{n}.db")), Durability::Off).unwrap(),
        );
        store
    })
    .await;
}
