//! The contacts worker at load: writes to 3CX in parallel up to `pbx_concurrency`, a 3CX that
//! answers "busy" (429, or 503 with Retry-After) waited out, and the real binary killed with
//! SIGKILL halfway through a first sync and run again: every contact once, none lost.

use std::time::{Duration, Instant};

use http::StatusCode;
use pbxgate::clock::{Clock, SystemClock};
use pbxgate::store::Store;
use pbxgate::sync::{Mode, RunStatus};
use pbxgate_sandbox::graph::SimContact;
use pbxgate_sandbox::{DEMO_SHARED_MAILBOX, DEMO_TENANT};

use crate::support::*;
use crate::sync_contacts::{Env, env, names};

/// The demo company phonebook, before any bulk contacts.
const DEMO_COMPANY: [&str; 4] = ["Fabrikam Support", "Lena Lopez", "Max Müller", "Otto Ortiz"];

/// Adds `n` contacts "Bulk NNNN" with a phone number to the shared mailbox.
fn bulk(env: &Env, n: usize) {
    for i in 0..n {
        let c = SimContact::person("Bulk", &format!("{i:04}"), &format!("+49 30 555{i:04}"));
        env.sandbox.graph.add_contact(DEMO_SHARED_MAILBOX, None, c);
    }
}

/// The company phonebook holds the demo entries and `n` bulk ones, each exactly once, and the
/// personal phonebooks theirs.
fn every_contact_once(env: &Env, n: usize) {
    env.owned_tags();
    let mut want: Vec<String> = (0..n).map(|i| format!("Bulk {i:04}")).collect();
    want.extend(DEMO_COMPANY.iter().map(|s| s.to_string()));
    want.sort();
    assert_eq!(names(&env.company()), want);
    assert_eq!(env.personal("101"), ["Paul Parker", "Quinn Adams"]);
    assert_eq!(env.personal("102"), ["Rita Ross"]);
}

#[tokio::test]
async fn writes_go_to_3cx_in_parallel_up_to_pbx_concurrency() {
    for n in [1, 3] {
        let env = env(|c| c.sync.contacts.pbx_concurrency = n).await;
        bulk(&env, 30);
        let pbx = &env.sandbox.pbx;
        pbx.limit_contact_calls(None, StatusCode::TOO_MANY_REQUESTS);
        pbx.set_contacts_latency(Duration::from_millis(20));
        let r = env.run(Mode::Delta).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(
            pbx.most_contact_writes_at_once(),
            n,
            "pbx_concurrency = {n}"
        );
        assert_eq!(pbx.most_contact_calls_at_once(), n, "reads included");
        every_contact_once(&env, 30);
    }
}

#[tokio::test]
async fn a_busy_3cx_is_waited_out_with_nothing_twice_or_lost() {
    for busy in [
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::SERVICE_UNAVAILABLE,
    ] {
        let env = env(|c| c.sync.contacts.pbx_concurrency = 4).await;
        bulk(&env, 30);
        let pbx = &env.sandbox.pbx;
        pbx.limit_contact_calls(Some(2), busy);
        pbx.set_contacts_latency(Duration::from_millis(20));
        let r = env.run(Mode::Delta).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{busy}: {r:?}");
        assert!(r.errors.is_empty(), "{busy}: {r:?}");
        assert!(
            pbx.contact_calls_refused() > 0,
            "{busy}: the limit was never hit"
        );
        assert!(pbx.most_contact_calls_at_once() <= 2);
        every_contact_once(&env, 30);
    }
}

/// `pbxgate sync contacts --once` against the gateway's store, with personal phonebooks.
fn sync_command(env: &Env) -> std::process::Command {
    let c = &env.gw.app.config;
    let text = config_text(&env.sandbox.pbx_server.url(), env.dir.path(), "")
        .replace(
            "authority = \"http://127.0.0.1:9\"",
            &format!("authority = \"{}\"", c.entra.authority),
        )
        .replace(
            "graph_url = \"http://127.0.0.1:9\"",
            &format!("graph_url = \"{}\"", c.entra.graph_url),
        )
        .replace(TENANT, DEMO_TENANT);
    let text = format!(
        "{text}\n[sync.contacts]\nshared_mailboxes = [\"{DEMO_SHARED_MAILBOX}\"]\n\
         personal = true\nmax_company_contacts = 5000\n"
    );
    let path = env.dir.path().join("binary.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = std::process::Command::new(binary());
    cmd.args(["sync", "contacts", "--once", "--config"])
        .arg(path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Waits for `child`; its stderr when it failed.
async fn finish(mut child: std::process::Child) -> Result<(), String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return if status.success() { Ok(()) } else { Err(err) };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    Err("did not finish within 2 minutes".into())
}

#[tokio::test]
async fn a_first_sync_killed_halfway_and_run_again_creates_every_contact_once() {
    const N: usize = 400;
    let env = env(|_| {}).await;
    bulk(&env, N);
    env.sandbox
        .pbx
        .set_contacts_latency(Duration::from_millis(20));
    let total = N + DEMO_COMPANY.len();
    let mut child = sync_command(&env).spawn().unwrap();
    let started = Instant::now();
    loop {
        let made = env.company().len();
        if made >= total / 3 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{made} entries"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap(); // SIGKILL: no clean-up at all
    child.wait().unwrap();
    let made = env.company().len();
    assert!(made < total, "killed after the end: {made} of {total}");

    // The killed run's lease would hold the worker for ten minutes; let it run out now.
    let store = Store::open(&env.gw.app.config.store.url).await.unwrap();
    let later = SystemClock.now() + 3600;
    assert!(
        store
            .acquire_lease("worker:contacts", "after-the-kill", later, 0)
            .await
            .unwrap()
    );

    finish(sync_command(&env).spawn().unwrap()).await.unwrap();
    every_contact_once(&env, N);
    let writes = env.writes();
    finish(sync_command(&env).spawn().unwrap()).await.unwrap();
    assert_eq!(
        env.writes(),
        writes,
        "a converged phonebook is not written again"
    );
}
