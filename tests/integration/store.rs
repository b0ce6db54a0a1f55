//! The store on both backends: the same operations, the same answers.

use pbxgate::store::{Backend, SessionRow, Store};

use crate::support::*;

fn row(id: &str, user: &str, sid: &str, now: i64) -> SessionRow {
    SessionRow {
        id_hash: id.into(),
        user_key: user.into(),
        upn: format!("{user}@contoso.com"),
        extension: "101".into(),
        idp_sid: Some(sid.into()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + 3600,
        revoked_at: None,
        login_hint: Some(format!("hint-{user}")),
    }
}

async fn round_trip(store: &Store) {
    let now = 1_800_000_000;
    store.ping().await.unwrap();
    let a = row("h-a", "t:alice", "sid-1", now);
    store.insert_session(&a).await.unwrap();
    assert_eq!(store.session("h-a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.session("h-none").await.unwrap(), None);
    assert!(
        store.insert_session(&a).await.is_err(),
        "an id is never issued twice"
    );

    // Touch moves forward only.
    store.touch_session("h-a", now + 100).await.unwrap();
    store.touch_session("h-a", now + 50).await.unwrap();
    assert_eq!(
        store.session("h-a").await.unwrap().unwrap().last_seen_at,
        now + 100
    );

    // Revocation: one, per user, per Entra session id.
    assert!(store.revoke_session("h-a", now + 1).await.unwrap());
    assert!(
        !store.revoke_session("h-a", now + 2).await.unwrap(),
        "already revoked"
    );
    assert_eq!(
        store.session("h-a").await.unwrap().unwrap().revoked_at,
        Some(now + 1)
    );
    store
        .insert_session(&row("h-b", "t:bob", "sid-2", now))
        .await
        .unwrap();
    store
        .insert_session(&row("h-c", "t:bob", "sid-3", now))
        .await
        .unwrap();
    store
        .insert_session(&row("h-d", "t:carol", "sid-3", now))
        .await
        .unwrap();
    assert_eq!(store.revoke_user_sessions("t:bob", now).await.unwrap(), 2);
    assert_eq!(
        store.revoke_idp_sessions("sid-3", now).await.unwrap(),
        1,
        "carol's"
    );
    assert_eq!(
        store.revoke_user_sessions("t:nobody", now).await.unwrap(),
        0
    );

    // Purge: everything ended before the cutoff goes, live sessions stay.
    store
        .insert_session(&row("h-live", "t:dave", "sid-4", now + 10_000))
        .await
        .unwrap();
    let purged = store.purge_sessions(now + 5000, 1800).await.unwrap();
    assert_eq!(purged, 4);
    assert!(store.session("h-live").await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_round_trip_and_file_created_on_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/pbxgate.db");
    let store = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists());
    assert_eq!(store.backend(), Backend::Sqlite);
    round_trip(&store).await;
    store.close().await;
    // Reopening runs the migrations again without harm and keeps the data.
    let again = Store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(again.session("h-live").await.unwrap().is_some());
}

#[tokio::test]
async fn postgres_round_trip() {
    let db = PgDatabase::create().await;
    let store = Store::open(&db.url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    round_trip(&store).await;
    store.close().await;
    let again = Store::open(&db.url).await.unwrap();
    assert!(again.session("h-live").await.unwrap().is_some());
    again.close().await;
}

#[tokio::test]
async fn gateway_sessions_work_on_postgres_across_replicas() {
    let db = PgDatabase::create().await;
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&up.url(), dir.path(), |c| c.store.url = db.url.clone());
    let one = TestGateway::start_with(cfg.clone()).await;
    let two = TestGateway::start_with(cfg).await;
    let id = one.session_for("alice").await;
    // The second replica never saw the session being made: it reads it from PostgreSQL.
    let res = client()
        .get(two.url("/webclient/x"))
        .header("cookie", cookie(&id))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn unreachable_store_is_a_clear_start_error() {
    let err = Store::open("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with("cannot open the store"),
        "{err}"
    );
    let err = Store::open("mysql://x").await.unwrap_err();
    assert!(err.to_string().contains("expected sqlite"), "{err}");
}
