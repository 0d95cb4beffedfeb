//! The local adapters pass the backend-agnostic conformance suites.

use std::time::Duration;

use sluice_engine::local::{DirStore, SqliteStore};
use sluice_ports::conformance::{object_store_suite, order_store_suite};

#[tokio::test]
async fn dir_store_meets_the_object_store_guarantees() {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(&dir.path().join("bucket"), "bucket").unwrap();
    object_store_suite(&store).await;
}

#[tokio::test]
async fn sqlite_meets_the_order_store_guarantees() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        &dir.path().join("t.db"),
        Duration::from_secs(60),
        Duration::from_secs(60),
    )
    .unwrap();
    order_store_suite(&store).await;
}

#[tokio::test]
async fn dir_store_conditional_puts_have_one_winner_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(DirStore::open(&dir.path().join("bucket"), "bucket").unwrap());
    let attempts = (0..32).map(|i| {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move {
            use sluice_engine::ObjectStore;
            store
                .put_if_absent("race/claim", format!("{i}").into_bytes())
                .await
                .is_ok()
        })
    });
    let winners = futures::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(winners, 1);
}
