//! The presence worker against the simulated Graph (`getSchedule`) and 3CX (profiles), on a
//! manual clock: meetings set and restore the status, users and protected profiles win,
//! no flapping, a restart mid-meeting, batching, throttling and mailbox-less users.

use pbxgate::config::Config;
use pbxgate::sync::{Mode, RunReport, RunStatus};
use pbxgate_sandbox::graph::{DirectoryUser, Mailbox};

use crate::support::*;
use crate::sync_users::{SyncEnv, sync_env, tenant};

const MIN: i64 = 60;

async fn presence_env(edit: impl FnOnce(&mut Config)) -> SyncEnv {
    // The worker runs when the test says so, not on the gateway's schedule.
    let env = sync_env(edit).await;
    tenant(&env.graph);
    let users = env.run(Mode::Full, false).await;
    assert_eq!(users.status, RunStatus::Succeeded, "{users:?}");
    env
}

impl SyncEnv {
    async fn presence(&self) -> RunReport {
        let (_tx, stop) = tokio::sync::watch::channel(false);
        let r = self
            .gw
            .app
            .workers
            .runner
            .run(
                self.gw.app.workers.presence.as_ref(),
                Mode::Delta,
                false,
                &stop,
            )
            .await
            .unwrap();
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        r
    }

    fn now(&self) -> i64 {
        use pbxgate::clock::Clock;
        self.gw.clock.now()
    }

    /// Moves the clock on by `secs` and runs the worker as the scheduler would.
    async fn tick(&self, secs: i64) -> RunReport {
        self.gw.clock.advance(secs);
        self.presence().await
    }

    fn profile(&self, number: &str) -> String {
        let p = self.sandbox.pbx.extension(number).unwrap().profile;
        if p.is_empty() { "Available".into() } else { p }
    }

    fn set_profile(&self, number: &str, profile: &str) {
        self.sandbox
            .pbx
            .edit_extension(number, |e| e.profile = profile.into());
    }

    /// (extension, profile) of every profile write so far.
    fn writes(&self) -> Vec<(String, String)> {
        self.sandbox
            .pbx
            .profile_writes()
            .into_iter()
            .map(|(n, p, _)| (n, p))
            .collect()
    }

    fn meeting(&self, upn: &str, from: i64, to: i64, show_as: &str) -> u64 {
        let now = self.now();
        self.graph.add_event(upn, now + from, now + to, show_as)
    }
}

const ALICE: &str = "Alice.Adams@Contoso.com";

fn w(n: &str, p: &str) -> (String, String) {
    (n.to_string(), p.to_string())
}

#[tokio::test]
async fn a_meeting_sets_dnd_and_its_end_restores_the_previous_profile() {
    let env = presence_env(|_| {}).await;
    env.set_profile("101", "Away");
    env.meeting(ALICE, MIN, 31 * MIN, "busy");
    let r = env.presence().await;
    assert!(r.planned.is_empty(), "nothing before the meeting: {r:?}");
    env.tick(MIN).await;
    assert_eq!(env.profile("101"), "Out of office");
    // Every further tick during the meeting writes nothing, and reads 3CX not at all.
    let requests = env.sandbox.pbx.requests();
    for _ in 0..5 {
        let r = env.tick(MIN).await;
        assert!(r.planned.is_empty(), "{r:?}");
    }
    assert_eq!(env.sandbox.pbx.requests(), requests);
    env.tick(25 * MIN).await;
    assert_eq!(env.profile("101"), "Away");
    assert_eq!(
        env.writes(),
        vec![w("101", "Out of office"), w("101", "Away")]
    );
}

#[tokio::test]
async fn a_profile_the_user_picks_during_the_meeting_is_not_overridden_at_its_end() {
    let env = presence_env(|_| {}).await;
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    env.presence().await;
    assert_eq!(env.profile("101"), "Out of office");
    env.set_profile("101", "Available");
    let r = env.tick(31 * MIN).await;
    assert_eq!(r.applied.get("forget"), Some(&1), "{r:?}");
    assert_eq!(env.profile("101"), "Available");
    assert_eq!(env.writes(), vec![w("101", "Out of office")]);
    // Nothing is held any more: the next meeting starts afresh.
    env.meeting(ALICE, MIN, 10 * MIN, "oof");
    env.tick(2 * MIN).await;
    assert_eq!(env.profile("101"), "Away");
}

#[tokio::test]
async fn protected_profiles_are_never_overridden() {
    let env = presence_env(|_| {}).await;
    env.set_profile("101", "Custom 2"); // Business Trip
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    let r = env.presence().await;
    assert_eq!(r.applied.get("leave"), Some(&1), "{r:?}");
    env.tick(10 * MIN).await;
    env.tick(30 * MIN).await;
    assert_eq!(env.profile("101"), "Custom 2");
    assert!(env.writes().is_empty());
}

#[tokio::test]
async fn oof_means_away_and_tentative_or_free_mean_nothing() {
    let env = presence_env(|_| {}).await;
    env.meeting("erin.evans@contoso.com", 0, 60 * MIN, "oof");
    // Capitalised, as Graph's concept page shows it.
    env.meeting("frank.fox@contoso.com", 0, 60 * MIN, "Tentative");
    env.meeting(ALICE, 0, 60 * MIN, "Free");
    env.presence().await;
    let erin = env.sandbox.pbx.extensions();
    let erin = erin
        .iter()
        .find(|e| e.email == "erin.evans@contoso.com")
        .unwrap();
    assert_eq!(erin.profile, "Away");
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());
}

#[tokio::test]
async fn back_to_back_and_overlapping_meetings_write_once_per_real_change() {
    let env = presence_env(|_| {}).await;
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    env.meeting(ALICE, 30 * MIN, 60 * MIN, "Busy");
    env.meeting(ALICE, 50 * MIN, 70 * MIN, "workingElsewhere");
    env.meeting(ALICE, 70 * MIN, 80 * MIN, "oof");
    env.presence().await;
    // One tick a minute through the afternoon, reads from Graph and boundary wake-ups alike.
    for _ in 0..90 {
        env.tick(MIN).await;
    }
    assert_eq!(
        env.writes(),
        vec![
            w("101", "Out of office"),
            w("101", "Away"),
            w("101", "Available")
        ]
    );
}

#[tokio::test]
async fn the_scheduler_wakes_at_the_next_meeting_boundary() {
    let env =
        presence_env(|c| c.sync.presence.interval = pbxgate::config::HumanDuration::secs(300))
            .await;
    env.meeting(ALICE, 100, 700, "busy");
    env.presence().await;
    let presence = &env.gw.app.workers.presence;
    assert_eq!(presence.next_due(env.now()), env.now() + 100);
    // At the boundary the last read decides: no Graph request, the status changes on time.
    env.graph.reset_counters();
    env.tick(100).await;
    assert_eq!(env.graph.requests(), 0);
    assert_eq!(env.profile("101"), "Out of office");
    assert_eq!(presence.next_due(env.now()), env.now() + 200, "next read");
}

#[tokio::test]
async fn a_restart_mid_meeting_still_restores() {
    let env = presence_env(|_| {}).await;
    env.set_profile("101", "Away");
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    env.presence().await;
    assert_eq!(env.profile("101"), "Out of office");
    // A new process on the same store (another replica, or a restart after a crash).
    let config = env.gw.app.config.clone();
    let again = TestGateway::start_with_clock(config, env.gw.clock.clone()).await;
    env.gw.clock.advance(31 * MIN);
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let r = again
        .app
        .workers
        .runner
        .run(
            again.app.workers.presence.as_ref(),
            Mode::Delta,
            false,
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(r.applied.get("restore"), Some(&1), "{r:?}");
    assert_eq!(env.profile("101"), "Away");
}

/// `n` more members with mailboxes, synced to extensions.
async fn with_users(n: usize) -> SyncEnv {
    let env = sync_env(|_| {}).await;
    for i in 0..n {
        env.graph.add_user(DirectoryUser::member(
            &format!("user{i:03}@contoso.com"),
            "User",
            &format!("{i:03}"),
        ));
    }
    assert_eq!(
        env.run(Mode::Full, false).await.status,
        RunStatus::Succeeded
    );
    env
}

#[tokio::test]
async fn free_busy_is_read_20_mailboxes_a_call_and_20_calls_a_batch() {
    for (users, calls, batches) in [(25, 2, 1), (450, 23, 2)] {
        let env = with_users(users).await;
        env.graph.reset_counters();
        env.presence().await;
        let envelopes = env.graph.batch_calls();
        assert_eq!(envelopes, batches, "{users} users");
        assert_eq!(env.graph.requests() - envelopes, calls, "{users} users");
    }
}

#[tokio::test]
async fn throttled_batch_members_are_retried() {
    let env = presence_env(|_| {}).await;
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    env.graph.throttle_next(1, "0.2");
    let r = env.presence().await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(env.profile("101"), "Out of office");
}

#[tokio::test]
async fn mailbox_less_and_policy_blocked_users_are_skipped_for_a_day() {
    let env = presence_env(|_| {}).await;
    for (upn, mailbox) in [
        ("erin.evans@contoso.com", Mailbox::Missing),
        ("frank.fox@contoso.com", Mailbox::Blocked),
    ] {
        let id = env.graph.user(upn).unwrap().id;
        assert!(env.graph.update_user(&id, |u| u.mailbox = mailbox));
    }
    env.meeting(ALICE, 0, 30 * MIN, "busy");
    let r = env.presence().await;
    assert_eq!(r.applied.get("skip"), Some(&2), "{r:?}");
    assert_eq!(env.profile("101"), "Out of office", "Alice is still served");
    let reasons: Vec<&str> = r.rows.iter().map(|(_, _, d)| d.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|d| d.contains("MailboxNotEnabledForRESTAPI")
                || d.contains("ErrorMailRecipientNotFound")),
        "{reasons:?}"
    );
    // Within the day neither is asked for again.
    let r = env.tick(2 * MIN).await;
    assert!(!r.planned.contains_key("skip"), "{r:?}");
    let r = env.tick(24 * 60 * MIN).await;
    assert_eq!(
        r.applied.get("skip"),
        Some(&2),
        "asked again after a day: {r:?}"
    );
}

#[tokio::test]
async fn the_command_line_dry_run_prints_the_plan_and_writes_nothing() {
    let env = presence_env(|_| {}).await;
    env.meeting(ALICE, -MIN, 30 * MIN, "busy");
    let path = env.binary_config("");
    // Off the test's (single) runtime thread: the simulators must go on answering.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary())
            .args(["sync", "presence", "--once", "--dry-run", "--config"])
            .arg(&path)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Dry run"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("set "))
        .unwrap_or_default();
    assert!(
        line.contains("Alice.Adams@Contoso.com") && line.contains("\"Out of office\""),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.writes().is_empty());
}
