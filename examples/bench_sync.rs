//! The users-sync benchmark behind `bench/sync.sh`: N users in the simulated Graph (with a
//! latency per call), the simulated 3CX, and the real `pbxgate sync users --once` binary.
//! Reports the first (full) sync and a no-change incremental run: wall time, Graph and XAPI
//! requests, XAPI writes, and the binary's peak RSS.
//!
//! `bench_sync [USERS] [LATENCY_MS] [PBXGATE_BINARY]`

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::time::{Duration, Instant};

use pbxgate_sandbox::graph::DirectoryUser;

mod common;

struct Measured {
    wall: Duration,
    graph: usize,
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
    for i in 0..users {
        let mut u = DirectoryUser::member(
            &format!("user{i:05}@contoso.com"),
            "Bench",
            &format!("User {i:05}"),
        );
        u.mobile_phone = Some(format!("+49 170 {i:07}"));
        sandbox.graph.add_user(u);
    }
    sandbox.graph.set_latency(Duration::from_millis(latency));

    let dir = tempfile::tempdir()?;
    let extra = "[sync.users]\nextension_start = \"1000\"\n";
    let config = common::write_config(&sandbox, dir.path(), extra)?;

    let measure = async || -> anyhow::Result<Measured> {
        sandbox.graph.reset_counters();
        let (xapi0, writes0) = (sandbox.pbx.requests(), sandbox.pbx.writes());
        let started = Instant::now();
        let peak = common::run(&binary, "users", &config).await?;
        Ok(Measured {
            wall: started.elapsed(),
            graph: sandbox.graph.requests(),
            xapi: sandbox.pbx.requests() - xapi0,
            writes: sandbox.pbx.writes() - writes0,
            peak_rss_kib: peak,
        })
    };
    let first = measure().await?;
    let again = measure().await?;
    let created = sandbox.pbx.extensions().len();

    let page = 100;
    // The demo directory's few users are in Graph too.
    let ideal = (users + pbxgate_sandbox::demo_directory().len()).div_ceil(page);
    println!("users sync: {users} users in Graph, {latency} ms per Graph call, page size {page}");
    println!(
        "{:<12} {:>9} {:>14} {:>14} {:>12} {:>12}",
        "run", "wall_s", "graph_requests", "xapi_requests", "xapi_writes", "peak_rss_MB"
    );
    for (name, m) in [("first(full)", &first), ("no-change", &again)] {
        println!(
            "{:<12} {:>9.2} {:>14} {:>14} {:>12} {:>12.1}",
            name,
            m.wall.as_secs_f64(),
            m.graph,
            m.xapi,
            m.writes,
            m.peak_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "graph requests for the full listing: {} (ideal ceil(N/page) = {}, {:+.1}%); extensions in 3CX: {created}",
        first.graph,
        ideal,
        (first.graph as f64 / ideal as f64 - 1.0) * 100.0
    );
    Ok(())
}
