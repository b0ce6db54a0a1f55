//! The users worker against the simulated Graph and 3CX: plan and apply, idempotence,
//! removal policies, faults, and a real process killed mid-run.

use std::sync::Arc;

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate::config::{Config, OnRemoved};
use pbxgate::sync::{Mode, RunReport, RunStatus};
use pbxgate_sandbox::graph::{self, DirectoryUser, GraphSim};
use pbxgate_sandbox::pbx::SimExtension;
use pbxgate_sandbox::{DEMO_TENANT, Running, Sandbox};

use crate::support::*;

/// The simulators and a gateway on a manual clock; shared with the other workers' tests.
pub struct SyncEnv {
    pub sandbox: Sandbox,
    pub graph: Arc<GraphSim>,
    pub graph_server: Running,
    pub gw: TestGateway,
    pub dir: tempfile::TempDir,
}

pub async fn sync_env(edit: impl FnOnce(&mut Config)) -> SyncEnv {
    init();
    let clock = ManualClock::new(SystemClock.now());
    let registration = registration();
    let sandbox = sandbox(&registration, &clock).await;
    let graph = Arc::new(GraphSim::new(Arc::new(clock.clone())));
    graph.trust(sandbox.entra.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let graph_server =
        pbxgate_sandbox::spawn(listener, graph::router(graph.clone()), None).unwrap();
    graph.set_base(&graph_server.url());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = graph_server.url().parse().unwrap();
        c.sync.users.extension_start = Some("200".into());
        c.server.login_rate_limit = 10_000;
    });
    edit(&mut cfg);
    let gw = TestGateway::start_with_clock(cfg, clock).await;
    SyncEnv {
        sandbox,
        graph,
        graph_server,
        gw,
        dir,
    }
}

impl SyncEnv {
    /// One run of the users worker.
    pub async fn run(&self, mode: Mode, dry_run: bool) -> RunReport {
        let (_tx, stop) = tokio::sync::watch::channel(false);
        self.gw
            .app
            .workers
            .runner
            .run(self.gw.app.workers.users.as_ref(), mode, dry_run, &stop)
            .await
            .unwrap()
    }

    /// A config file for the real binary: the same store and simulators, plus `extra`.
    pub fn binary_config(&self, extra: &str) -> std::path::PathBuf {
        let path = self.dir.path().join("pbxgate.toml");
        let c = &self.gw.app.config;
        let text = format!(
            "{}\n{extra}",
            config_text(&self.sandbox.pbx_server.url(), self.dir.path(), "")
                .replace(
                    "authority = \"http://127.0.0.1:9\"",
                    &format!("authority = \"{}\"", c.entra.authority)
                )
                .replace(
                    "graph_url = \"http://127.0.0.1:9\"",
                    &format!("graph_url = \"{}\"", self.graph_server.url())
                )
                .replace(TENANT, DEMO_TENANT)
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ext(&self, number: &str) -> Option<SimExtension> {
        self.sandbox.pbx.extension(number)
    }

    fn numbers_with_email(&self, email: &str) -> Vec<String> {
        self.sandbox
            .pbx
            .extensions()
            .into_iter()
            .filter(|e| e.email.eq_ignore_ascii_case(email))
            .map(|e| e.number)
            .collect()
    }
}

fn count(r: &RunReport, kind: &str) -> u64 {
    r.applied.get(kind).copied().unwrap_or(0)
}

/// Alice (matches 101), Erin and Frank (new), and Gina (a guest).
pub fn tenant(g: &GraphSim) -> (String, String, String) {
    let mut alice = DirectoryUser::member("Alice.Adams@Contoso.com", "Alice", "Adams");
    alice.id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301".into();
    g.add_user(alice.clone());
    let mut erin = DirectoryUser::member("erin.evans@contoso.com", "Erin", "Evans");
    erin.mobile_phone = Some("+49 (170) 555-0101".into());
    erin.business_phones = vec!["+49 30 555-0100".into()];
    g.add_user(erin.clone());
    let frank = DirectoryUser::member("frank.fox@contoso.com", "Frank", "Fox");
    g.add_user(frank.clone());
    let mut gina = DirectoryUser::member(
        "gina_fabrikam.com#EXT#@contoso.onmicrosoft.com",
        "Gina",
        "Guest",
    );
    gina.user_type = "Guest".into();
    g.add_user(gina);
    (alice.id, erin.id, frank.id)
}

fn hand_made(number: &str, email: &str) -> SimExtension {
    SimExtension {
        id: 0,
        number: number.into(),
        first_name: "Hand".into(),
        last_name: "Made".into(),
        email: email.into(),
        access_password: None,
        enabled: true,
        mobile: String::new(),
        outbound_caller_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn first_run_creates_and_matches_then_a_second_run_changes_nothing() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    env.sandbox
        .pbx
        .add_extension(hand_made("200", "someone@else.com"));

    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.status, RunStatus::Succeeded);
    assert_eq!(
        r.mode,
        Mode::Full,
        "no delta link yet: the first run is full"
    );
    assert_eq!((count(&r, "match"), count(&r, "create")), (1, 2), "{r:?}");
    let erin = env.ext("201").expect("200 is taken, so Erin gets 201");
    assert_eq!(
        (erin.first_name.as_str(), erin.last_name.as_str()),
        ("Erin", "Evans")
    );
    assert_eq!(erin.email, "erin.evans@contoso.com");
    assert_eq!(erin.mobile, "+491705550101");
    assert_eq!(erin.outbound_caller_id, "", "off by default");
    assert_eq!(env.ext("202").unwrap().first_name, "Frank");
    assert_eq!(
        env.ext("200").unwrap().first_name,
        "Hand",
        "a hand-made extension is untouched"
    );
    assert!(
        env.numbers_with_email("gina_fabrikam.com#EXT#@contoso.onmicrosoft.com")
            .is_empty(),
        "guests excluded"
    );
    assert_eq!(
        env.numbers_with_email("alice.adams@contoso.com"),
        vec!["101"],
        "matched, not duplicated"
    );

    let writes = env.sandbox.pbx.writes();
    env.graph.reset_counters();
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.mode, Mode::Delta);
    assert!(r.planned.is_empty(), "{r:?}");
    assert_eq!(env.sandbox.pbx.writes(), writes, "zero write calls");
    assert!(
        env.graph.requests() <= 2,
        "{} Graph requests",
        env.graph.requests()
    );

    // A full reconcile with nothing changed writes nothing either.
    let r = env.run(Mode::Full, false).await;
    assert!(r.planned.is_empty(), "{r:?}");
    assert_eq!(env.sandbox.pbx.writes(), writes);
    let runs = env.gw.app.store.runs("users", 10).await.unwrap();
    assert_eq!(runs.len(), 3);
    assert!(runs.iter().all(|r| r.status == "succeeded"));
}

#[tokio::test]
async fn only_changed_owned_fields_are_written() {
    let env = sync_env(|c| c.sync.users.outbound_caller_id_from_business_phone = true).await;
    let (_, erin, _) = tenant(&env.graph);
    env.run(Mode::Full, false).await;
    assert_eq!(env.ext("200").unwrap().outbound_caller_id, "+49305550100");
    // An admin edits a field pbxgate does not own on Erin, and one it owns on Frank.
    env.sandbox
        .pbx
        .edit_extension("200", |e| e.access_password = Some("admin-set".into()));
    env.sandbox
        .pbx
        .edit_extension("201", |e| e.last_name = "Typo".into());
    env.graph
        .update_user(&erin, |u| u.mobile_phone = Some("+49 170 9999".into()));
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(count(&r, "update"), 1, "{r:?}");
    let detail = &r.rows[0].2;
    assert!(
        detail.contains("Mobile") && !detail.contains("FirstName"),
        "{detail}"
    );
    let e = env.ext("200").unwrap();
    assert_eq!(e.mobile, "+491709999");
    assert_eq!(
        e.access_password.as_deref(),
        Some("admin-set"),
        "not owned: kept"
    );
    assert_eq!(
        env.ext("201").unwrap().last_name,
        "Typo",
        "Frank did not change in Entra"
    );
    // The owned field edited in 3CX comes back with the next full reconcile.
    let r = env.run(Mode::Full, false).await;
    assert_eq!(count(&r, "update"), 1, "{r:?}");
    assert_eq!(env.ext("201").unwrap().last_name, "Fox");
}

#[tokio::test]
async fn an_extension_deleted_in_3cx_comes_back() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    env.run(Mode::Full, false).await;
    env.sandbox.pbx.remove_extension("200");
    let r = env.run(Mode::Full, false).await;
    assert_eq!(count(&r, "create"), 1, "{r:?}");
    assert_eq!(
        env.numbers_with_email("erin.evans@contoso.com"),
        vec!["200"]
    );
}

async fn removal(policy: OnRemoved) -> (SyncEnv, String) {
    let env = sync_env(|c| c.sync.users.on_removed = policy).await;
    let (alice, erin, _) = tenant(&env.graph);
    env.run(Mode::Full, false).await;
    // Erin signs in somewhere; then she leaves.
    env.gw
        .app
        .sessions
        .create(pbxgate::session::NewSession {
            user_key: format!("{DEMO_TENANT}:{erin}"),
            upn: "erin.evans@contoso.com".into(),
            extension: "200".into(),
            idp_sid: None,
            login_hint: None,
        })
        .await
        .unwrap();
    env.graph.update_user(&erin, |u| u.account_enabled = false);
    env.graph.delete_user(&alice, false);
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    let live = env
        .gw
        .app
        .store
        .revoke_user_sessions(&format!("{DEMO_TENANT}:{erin}"), 0)
        .await
        .unwrap();
    assert_eq!(live, 0, "{policy:?}: sessions ended at once");
    (env, erin)
}

#[tokio::test]
async fn removed_users_are_disabled_by_default() {
    let (env, _) = removal(OnRemoved::Disable).await;
    assert!(!env.ext("200").unwrap().enabled);
    assert!(
        !env.ext("101").unwrap().enabled,
        "a matched extension is disabled too"
    );
}

#[tokio::test]
async fn removed_users_are_kept_on_request() {
    let (env, _) = removal(OnRemoved::Keep).await;
    assert!(env.ext("200").unwrap().enabled);
    assert!(env.ext("101").unwrap().enabled);
}

#[tokio::test]
async fn delete_removes_only_extensions_pbxgate_created() {
    let (env, erin) = removal(OnRemoved::Delete).await;
    assert!(env.ext("200").is_none(), "created by pbxgate: deleted");
    let alice = env
        .ext("101")
        .expect("matched, not created by pbxgate: never deleted");
    assert!(!alice.enabled, "…but disabled");
    // Back in Entra: a new extension, and nothing twice.
    env.graph.update_user(&erin, |u| u.account_enabled = true);
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(count(&r, "create"), 1, "{r:?}");
    assert_eq!(env.numbers_with_email("erin.evans@contoso.com").len(), 1);
}

#[tokio::test]
async fn guests_are_included_on_request_and_overrides_win() {
    let env = sync_env(|c| {
        c.sync.users.include_guests = true;
        c.directory.overrides = vec![pbxgate::config::DirectoryOverride {
            upn: "frank.fox@contoso.com".into(),
            extension: "103".into(),
        }];
    })
    .await;
    tenant(&env.graph);
    let r = env.run(Mode::Full, false).await;
    assert_eq!(
        count(&r, "create"),
        2,
        "Erin and the guest; Frank has an override: {r:?}"
    );
    assert!(env.numbers_with_email("frank.fox@contoso.com").is_empty());
}

#[tokio::test]
async fn dry_run_writes_nothing_and_prints_the_plan() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    let r = env.run(Mode::Full, true).await;
    assert_eq!(r.planned.get("create"), Some(&2));
    assert!(r.applied.is_empty());
    assert_eq!(env.sandbox.pbx.writes(), 0);
    assert!(
        env.gw
            .app
            .store
            .directory_users(DEMO_TENANT)
            .await
            .unwrap()
            .is_empty()
    );
    let table = r.table();
    assert!(
        table.contains("create")
            && table.contains("erin.evans@contoso.com")
            && table.contains("extension 200"),
        "{table}"
    );
    // A dry run does not advance the delta link: the real run still sees everything.
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(count(&r, "create"), 2);
}

#[tokio::test]
async fn throttling_storms_and_busy_answers_are_ridden_out() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    env.graph.throttle_next(4, "0.05");
    env.graph
        .fail_next(2, http::StatusCode::SERVICE_UNAVAILABLE);
    let r = env.run(Mode::Full, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(count(&r, "create"), 2);
}

#[tokio::test]
async fn pbx_down_mid_run_fails_the_run_and_the_next_converges_without_duplicates() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    for i in 0..5 {
        env.graph.add_user(DirectoryUser::member(
            &format!("new{i}@contoso.com"),
            "New",
            &format!("User{i}"),
        ));
    }
    env.sandbox.pbx.go_down_after_writes(3);
    let r = env.run(Mode::Full, false).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert_eq!(count(&r, "create"), 3);
    assert!(r.message.unwrap().contains("3CX"));
    env.sandbox.pbx.heal();
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    for i in 0..5 {
        assert_eq!(
            env.numbers_with_email(&format!("new{i}@contoso.com")).len(),
            1,
            "new{i}"
        );
    }
    assert_eq!(env.numbers_with_email("erin.evans@contoso.com").len(), 1);
}

#[tokio::test]
async fn an_expired_delta_token_means_a_full_resync_without_duplicates() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    env.run(Mode::Full, false).await;
    env.graph.expire_delta_tokens();
    let hank = DirectoryUser::member("hank.hill@contoso.com", "Hank", "Hill");
    env.graph.add_user(hank);
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.mode, Mode::Full, "resynced");
    assert_eq!(count(&r, "create"), 1, "only Hank is new: {r:?}");
    assert_eq!(env.numbers_with_email("erin.evans@contoso.com").len(), 1);
}

#[tokio::test]
async fn a_user_signing_in_before_the_first_sync_is_provisioned() {
    let env = sync_env(|c| c.sync.users.enabled = true).await;
    // Carol is in Entra (and the sign-in simulator) but has no extension yet.
    let mut carol = DirectoryUser::member("carol.clark@contoso.com", "Carol", "Clark");
    carol.id = "9c858901-8a57-4791-81fe-4c455b099bc9".into();
    env.graph.add_user(carol);
    let res = client()
        .get(
            env.gw
                .url("/auth/login?return_to=%2F&login_hint=carol.clark%40contoso.com"),
        )
        .send()
        .await
        .unwrap();
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = res.headers()["location"].to_str().unwrap().to_string();
    let back = client().get(&authorize).send().await.unwrap();
    let back = back.headers()["location"]
        .to_str()
        .unwrap()
        .strip_prefix(PUBLIC)
        .unwrap()
        .to_string();
    let res = client()
        .get(env.gw.url(&back))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "{:?}", res.text().await);
    assert_eq!(
        env.numbers_with_email("carol.clark@contoso.com"),
        vec!["200"]
    );
    // The first sync afterwards finds her in place: nothing twice.
    let r = env.run(Mode::Full, false).await;
    assert_eq!(count(&r, "create"), 0, "Carol is not created again: {r:?}");
    assert_eq!(env.numbers_with_email("carol.clark@contoso.com").len(), 1);
}

#[tokio::test]
async fn a_killed_sync_process_is_converged_by_the_next_run() {
    let env = sync_env(|_| {}).await;
    for i in 0..120 {
        env.graph.add_user(DirectoryUser::member(
            &format!("bulk{i:03}@contoso.com"),
            "Bulk",
            &format!("{i:03}"),
        ));
    }
    env.graph.set_latency(std::time::Duration::from_millis(5));
    // The real binary, on the same store, against the same simulators.
    let path = env.binary_config("[sync.users]\nextension_start = \"200\"\n");
    let mut child = std::process::Command::new(binary())
        .args(["sync", "users", "--once", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once it has created some extensions, but not all.
    let started = std::time::Instant::now();
    while env.sandbox.pbx.writes() < 20 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the sync made no progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    let _ = child.wait();
    let made = env.sandbox.pbx.writes();
    assert!(made < 120, "killed mid-run ({made} writes)");
    // The killed run's lease (taken on the wall clock) is still held; it lapses ten minutes
    // after its last renewal, and the next run converges.
    let lapse = SystemClock.now() + 601 - env.gw.clock.now();
    env.gw.clock.advance(lapse);
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    for i in 0..120 {
        assert_eq!(
            env.numbers_with_email(&format!("bulk{i:03}@contoso.com"))
                .len(),
            1,
            "bulk{i:03}"
        );
    }
}

#[tokio::test]
async fn a_stopping_gateway_records_the_run_as_interrupted() {
    let env = sync_env(|_| {}).await;
    tenant(&env.graph);
    let (tx, stop) = tokio::sync::watch::channel(false);
    tx.send(true).unwrap();
    let r = env
        .gw
        .app
        .workers
        .runner
        .run(env.gw.app.workers.users.as_ref(), Mode::Full, false, &stop)
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Interrupted);
    assert!(r.applied.is_empty());
    let runs = env.gw.app.store.runs("users", 1).await.unwrap();
    assert_eq!(runs[0].status, "interrupted");
    // Nothing was committed: the next run does the whole job.
    let r = env.run(Mode::Delta, false).await;
    assert_eq!(count(&r, "create"), 2);
}

#[tokio::test]
async fn photos_are_copied_once_and_again_only_when_they_change() {
    use base64::Engine;
    let env = sync_env(|c| c.sync.users.photos = true).await;
    let (alice, _, _) = tenant(&env.graph);
    env.graph.set_photo(&alice, Some(b"\xff\xd8first".to_vec()));
    let r = env.run(Mode::Full, false).await;
    assert_eq!(count(&r, "photo"), 1, "only Alice has a photo: {r:?}");
    let data_uri = |b: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(b);
        format!("data:image/jpeg;base64,{b64}")
    };
    assert_eq!(
        env.ext("101").unwrap().contact_image,
        data_uri(b"\xff\xd8first")
    );
    // The nightly check reads metadata only: nothing is uploaded again.
    let writes = env.sandbox.pbx.writes();
    let r = env.run(Mode::Full, false).await;
    assert_eq!(count(&r, "photo"), 0, "{r:?}");
    assert_eq!(env.sandbox.pbx.writes(), writes);
    // A new photo is no delta change: the delta run misses it, the nightly run copies it.
    env.graph
        .set_photo(&alice, Some(b"\xff\xd8second".to_vec()));
    assert_eq!(count(&env.run(Mode::Delta, false).await, "photo"), 0);
    assert_eq!(count(&env.run(Mode::Full, false).await, "photo"), 1);
    assert_eq!(
        env.ext("101").unwrap().contact_image,
        data_uri(b"\xff\xd8second")
    );
    // Removed in Entra: removed from the extension, once.
    env.graph.set_photo(&alice, None);
    assert_eq!(count(&env.run(Mode::Full, false).await, "photo"), 1);
    assert_eq!(env.ext("101").unwrap().contact_image, "");
    assert_eq!(count(&env.run(Mode::Full, false).await, "photo"), 0);
}
