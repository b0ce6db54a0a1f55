//! Several replicas with one 3CX API client (the same `[pbx] client_id` everywhere): the
//! simulated 3CX keeps one live token per API client, as the real one does, so the replicas
//! must share one token through the store instead of killing each other's.

use std::sync::Arc;

use pbxgate::clock::ManualClock;
use pbxgate::pbx::PbxClient;
use pbxgate::store::Store;
use pbxgate_sandbox::Sandbox;
use pbxgate_sandbox::pbx::{PbxSim, router};
use secrecy::{ExposeSecret, SecretString};

use crate::support::*;

/// The sandbox and two gateways on one PostgreSQL database, on one clock.
struct Replicas {
    sandbox: Sandbox,
    a: TestGateway,
    b: TestGateway,
    clock: ManualClock,
    _db: PgDatabase,
    _dir: tempfile::TempDir,
}

async fn replicas() -> Replicas {
    init();
    let clock = ManualClock::new(START);
    let sandbox = sandbox(&registration(), &clock).await;
    let db = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.store.url = db.url.clone()
    });
    let a = TestGateway::start_with_clock(cfg.clone(), clock.clone()).await;
    let b = TestGateway::start_with_clock(cfg, clock.clone()).await;
    Replicas {
        sandbox,
        a,
        b,
        clock,
        _db: db,
        _dir: dir,
    }
}

/// `n` XAPI reads at once, alternating between `a` and `b`; the errors.
async fn concurrent_reads(a: &Arc<PbxClient>, b: &Arc<PbxClient>, n: usize) -> Vec<String> {
    let calls = (0..n).map(|i| {
        let pbx = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { pbx.users(None).await.map(|_| ()) })
    });
    let mut errors = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        if let Err(e) = call.await.unwrap() {
            errors.push(e.to_string());
        }
    }
    errors
}

/// What the simulated 3CX counted: (XAPI requests, API tokens issued).
fn counts(sandbox: &Sandbox) -> (usize, usize) {
    (sandbox.pbx.requests(), sandbox.pbx.api_token_grants())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_over_two_replicas_share_one_token() {
    let r = replicas().await;
    let (requests, grants) = counts(&r.sandbox);
    let errors = concurrent_reads(&r.a.app.pbx, &r.b.app.pbx, 200).await;
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "{} calls failed",
        errors.len()
    );
    let (requests_after, grants_after) = counts(&r.sandbox);
    assert_eq!(grants_after - grants, 1, "one token for both replicas");
    assert_eq!(
        requests_after - requests,
        200,
        "no call refused and repeated"
    );
}

#[tokio::test]
async fn calls_alternating_between_replicas_use_one_token() {
    let r = replicas().await;
    let (requests, grants) = counts(&r.sandbox);
    for _ in 0..10 {
        r.a.app.pbx.users(None).await.unwrap();
        r.b.app.pbx.users(None).await.unwrap();
    }
    let (requests_after, grants_after) = counts(&r.sandbox);
    assert_eq!(
        (requests_after - requests, grants_after - grants),
        (20, 1),
        "(XAPI requests, tokens) for 20 calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_token_is_renewed_once_for_both_replicas() {
    let r = replicas().await;
    r.a.app.pbx.users(None).await.unwrap();
    r.b.app.pbx.users(None).await.unwrap();
    let (_, grants) = counts(&r.sandbox);
    // Within the last minute of the token's hour both replicas renew it, at once.
    r.clock.advance(3600 - 30);
    let errors = concurrent_reads(&r.a.app.pbx, &r.b.app.pbx, 40).await;
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(counts(&r.sandbox).1 - grants, 1, "exactly one new fetch");
    // Past the old token's expiry too: both use the new one.
    r.clock.advance(60);
    let errors = concurrent_reads(&r.a.app.pbx, &r.b.app.pbx, 10).await;
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(counts(&r.sandbox).1 - grants, 1);
}

/// A token 3CX refuses (here: something else fetched one with the same credentials) is
/// renewed by one replica; the other finds the new one in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_renewed_by_one_replica_and_found_by_the_other() {
    let r = replicas().await;
    r.a.app.pbx.users(None).await.unwrap();
    r.b.app.pbx.users(None).await.unwrap();
    let (requests, grants) = counts(&r.sandbox);
    foreign_token(&r.sandbox.pbx_server.url()).await;
    r.a.app.pbx.users(None).await.unwrap();
    r.b.app.pbx.users(None).await.unwrap();
    let (requests_after, grants_after) = counts(&r.sandbox);
    // The foreign fetch, then one renewal (by a); b's token was refused once too.
    assert_eq!(grants_after - grants, 2);
    assert_eq!(
        requests_after - requests,
        4,
        "each refused once, then repeated"
    );

    // Many calls refused at once: one renewal still, and none of them fails.
    foreign_token(&r.sandbox.pbx_server.url()).await;
    let errors = concurrent_reads(&r.a.app.pbx, &r.b.app.pbx, 40).await;
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        counts(&r.sandbox).1 - grants_after,
        2,
        "the foreign one and one renewal"
    );
}

/// Fetches an API token as some other program with the same credentials would.
async fn foreign_token(pbx: &str) {
    let res = client()
        .post(format!("{pbx}/connect/token"))
        .form(&[
            ("client_id", "pbxgate"),
            ("client_secret", "xapi-secret-value"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// PostgreSQL unreachable: the replica fetches a token of its own instead of failing every
/// XAPI call, and shares again when the store is back.
#[tokio::test]
async fn without_the_store_a_replica_uses_a_token_of_its_own() {
    init();
    let clock = ManualClock::new(START);
    let sandbox = sandbox(&registration(), &clock).await;
    let db = PgDatabase::create().await;
    let link = StoreLink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.store.url = link.url_for(&db.url)
    });
    let gw = TestGateway::start_with_clock(cfg, clock.clone()).await;
    gw.app.pbx.users(None).await.unwrap();
    let (_, grants) = counts(&sandbox);

    link.down().await;
    // Expired: a new token is needed while the store is down.
    clock.advance(3600);
    gw.app.pbx.users(None).await.unwrap();
    assert_eq!(counts(&sandbox).1 - grants, 1);
    // Refused: renewed without the store as well.
    foreign_token(&sandbox.pbx_server.url()).await;
    gw.app.pbx.users(None).await.unwrap();
    assert_eq!(counts(&sandbox).1 - grants, 3);

    // Back: the next renewal is stored for the replicas again.
    link.up().await;
    clock.advance(3600);
    gw.app.pbx.users(None).await.unwrap();
    let row = gw.app.store.api_token("pbxgate").await.unwrap().unwrap();
    assert_eq!(row.version, 2, "stored again after the outage");
    assert_eq!(row.expires_at, clock_now(&clock) + 3600);
}

fn clock_now(clock: &ManualClock) -> i64 {
    pbxgate::clock::Clock::now(clock)
}

/// A simulated 3CX whose API client `pbxgate` has `secret`.
async fn pbx_with_secret(
    secret: &str,
    clock: &ManualClock,
) -> (Arc<PbxSim>, pbxgate_sandbox::Running) {
    let sim = Arc::new(PbxSim::new(
        "p",
        ("pbxgate", secret),
        Vec::new(),
        Arc::new(clock.clone()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = pbxgate_sandbox::spawn(listener, router(sim.clone()), None).unwrap();
    (sim, running)
}

/// A client of the 3CX at `url` with client secret `secret`, on `store`.
fn client_with_secret(url: &str, secret: &str, store: &Store, clock: &ManualClock) -> PbxClient {
    let dir = tempfile::tempdir().unwrap();
    let c = config(url, dir.path(), |c| {
        c.pbx.client_secret = SecretString::from(secret.to_string())
    });
    PbxClient::new(&c.pbx, store.clone(), Arc::new(clock.clone())).unwrap()
}

/// The stored token is sealed under a key from the client secret: the store alone shows no
/// token, and after the secret is changed (in 3CX and in the config) the old token does not
/// open: the replica fetches a new one instead of first trying the old one.
#[tokio::test]
async fn the_stored_token_is_sealed_and_a_changed_secret_means_a_new_fetch() {
    init();
    let clock = ManualClock::new(START);
    let db = PgDatabase::create().await;
    let store = Store::open(&db.url).await.unwrap();
    let (_, old) = pbx_with_secret("old-secret", &clock).await;
    let before = client_with_secret(&old.url(), "old-secret", &store, &clock);
    let token = before.api_token().await.unwrap();
    let row = store.api_token("pbxgate").await.unwrap().unwrap();
    assert_eq!(row.version, 1);
    assert!(!row.sealed.unwrap().contains(token.expose_secret()));

    let (sim, new) = pbx_with_secret("new-secret", &clock).await;
    let after = client_with_secret(&new.url(), "new-secret", &store, &clock);
    after.users(None).await.unwrap();
    assert_eq!(
        (sim.api_token_grants(), sim.requests()),
        (1, 1),
        "a new token at once, no call refused"
    );
    assert_eq!(
        store.api_token("pbxgate").await.unwrap().unwrap().version,
        2
    );
}
