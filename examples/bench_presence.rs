//! The presence benchmark behind `bench/presence.sh`: N users in the simulated Graph (with a
//! latency per call), synced to the simulated 3CX by the real binary, then
//! 1. one `pbxgate sync presence --once` while a tenth of them are in a meeting: wall time,
//!    Graph HTTP requests (`$batch` envelopes) and getSchedule calls, 3CX reads and writes;
//! 2. the same again (nothing changed: no 3CX writes);
//! 3. `pbxgate serve` with the presence worker on, and meetings that start while it runs:
//!    the delay from each meeting's start to its 3CX status write.
//!
//! `bench_presence [USERS] [LATENCY_MS] [PBXGATE_BINARY]`

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::path::Path;
use std::time::{Duration, Instant};

use pbxgate::clock::{Clock, SystemClock};
use pbxgate_sandbox::Sandbox;
use pbxgate_sandbox::graph::DirectoryUser;

mod common;

struct Tick {
    wall: Duration,
    envelopes: usize,
    calls: usize,
    xapi: usize,
    writes: usize,
    peak_rss_kib: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let users: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let latency: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let binary = args
        .next()
        .unwrap_or_else(|| "target/release/pbxgate".into());
    let sandbox = common::sandbox().await?;
    let upn = |i: usize| format!("user{i:05}@contoso.com");
    // The demo tenant's members are synced too: N users in all.
    let demo_members = pbxgate_sandbox::demo_directory()
        .iter()
        .filter(|u| u.user_type == "Member")
        .count();
    for i in 0..users - demo_members {
        sandbox.graph.add_user(DirectoryUser::member(
            &upn(i),
            "Bench",
            &format!("User {i:05}"),
        ));
    }
    let dir = tempfile::tempdir()?;
    let extra = "[sync.users]\nextension_start = \"1000\"\n[sync.presence]\nenabled = false\ninterval = \"1m\"\n";
    let config = common::write_config(&sandbox, dir.path(), extra)?;

    common::run(&binary, "users", &config).await?;
    sandbox.graph.set_latency(Duration::from_millis(latency));

    // A tenth of the users are in a meeting now.
    let now = SystemClock.now();
    for i in (0..users - demo_members).step_by(10) {
        sandbox
            .graph
            .add_event(&upn(i), now - 60, now + 3600, "busy");
    }
    let measure = async || -> anyhow::Result<Tick> {
        sandbox.graph.reset_counters();
        let (xapi0, writes0) = (sandbox.pbx.requests(), sandbox.pbx.writes());
        let started = Instant::now();
        let peak_rss_kib = common::run(&binary, "presence", &config).await?;
        let envelopes = sandbox.graph.batch_calls();
        Ok(Tick {
            wall: started.elapsed(),
            envelopes,
            calls: sandbox.graph.requests() - envelopes,
            xapi: sandbox.pbx.requests() - xapi0,
            writes: sandbox.pbx.writes() - writes0,
            peak_rss_kib,
        })
    };
    let first = measure().await?;
    let again = measure().await?;

    println!(
        "presence: {users} users, {latency} ms per Graph call, {} in a meeting",
        users.div_ceil(10)
    );
    println!(
        "{:<24} {:>8} {:>15} {:>17} {:>14} {:>12} {:>12}",
        "tick (one process)",
        "wall_s",
        "graph_http_reqs",
        "getSchedule_calls",
        "xapi_requests",
        "xapi_writes",
        "peak_rss_MB"
    );
    for (name, t) in [("meetings start", &first), ("nothing changed", &again)] {
        println!(
            "{:<24} {:>8.2} {:>15} {:>17} {:>14} {:>12} {:>12.1}",
            name,
            t.wall.as_secs_f64(),
            t.envelopes,
            t.calls,
            t.xapi,
            t.writes,
            t.peak_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "target: graph HTTP requests <= ceil(N/400) = {}",
        users.div_ceil(400)
    );
    delay(&sandbox, &binary, &config, users).await
}

/// `serve` with the worker on its schedule; meetings for 100 users start 40 s after the
/// start (after the first read, which happens 30 s in and already sees them ahead).
async fn delay(sandbox: &Sandbox, binary: &str, config: &Path, users: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)?;
    std::fs::write(config, text.replace("enabled = false", "enabled = true"))?;
    let mut serve = std::process::Command::new(binary)
        .args(["serve", "--config"])
        .arg(config)
        .spawn()?;
    let start_at = SystemClock.now() + 40;
    let meetings = 100.min(users / 10);
    for i in 0..meetings {
        let upn = format!("user{:05}@contoso.com", i * 10 + 1);
        sandbox
            .graph
            .add_event(&upn, start_at, start_at + 600, "oof");
    }
    let before = sandbox.pbx.profile_writes().len();
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut first, mut last) = (None, None);
    while Instant::now() < deadline {
        let n = sandbox.pbx.profile_writes().len() - before;
        let since_start = wall_secs() - start_at as f64;
        if n > 0 && first.is_none() {
            first = Some(since_start);
        }
        if n >= meetings {
            last = Some(since_start);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = serve.kill();
    let _ = serve.wait();
    match (first, last) {
        (Some(f), Some(l)) => println!(
            "meeting start → 3CX status (pbxgate serve, interval 1m): first write {f:.2} s, all {meetings} writes {l:.2} s after the start"
        ),
        _ => anyhow::bail!("the status writes did not all happen within 150 s"),
    }
    Ok(())
}

fn wall_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
