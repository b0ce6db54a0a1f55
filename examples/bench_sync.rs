//! The users-sync benchmark behind `bench/sync.sh`: N users in the simulated Graph (with a
//! latency per call), the simulated 3CX, and the real `pbxgate sync users --once` binary.
//! Reports the first (full) sync and a no-change incremental run: wall time, Graph and XAPI
//! requests, XAPI writes, and the binary's peak RSS.
//!
//! `bench_sync [USERS] [LATENCY_MS] [PBXGATE_BINARY]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxgate::clock::SystemClock;
use pbxgate::sandbox::graph::GraphUser;
use pbxgate::sandbox::{DEMO_TENANT, Registration, Sandbox};

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
    pbxgate::tls::provider();

    let registration = Registration {
        client_id: "bench".into(),
        client_secret: Some("bench-secret".into()),
        certificate: None,
        public_url: "https://pbx.example.com".into(),
    };
    let sandbox = Sandbox::start(
        &registration,
        ("bench", "xapi"),
        "p",
        None,
        Arc::new(SystemClock),
    )
    .await?;
    for i in 0..users {
        let mut u = GraphUser::member(
            &format!("user{i:05}@contoso.com"),
            "Bench",
            &format!("User {i:05}"),
        );
        u.mobile_phone = Some(format!("+49 170 {i:07}"));
        sandbox.graph.add_user(u);
    }
    sandbox.graph.set_latency(Duration::from_millis(latency));

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("pbxgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[server]
public_url = "https://pbx.example.com"
[entra]
tenant_id = "{DEMO_TENANT}"
client_id = "bench"
client_secret = "bench-secret"
authority = "{entra}"
graph_url = "{graph}"
[pbx]
url = "{pbx}"
client_id = "bench"
client_secret = "xapi"
[store]
url = "sqlite://{db}"
[log]
level = "warn"
[sync.users]
extension_start = "1000"
"#,
            entra = sandbox.entra_server.url(),
            graph = sandbox.graph_server.url(),
            pbx = sandbox.pbx_server.url(),
            db = dir.path().join("pbxgate.db").display(),
        ),
    )?;

    let measure = async || -> anyhow::Result<Measured> {
        sandbox.graph.reset_counters();
        let (xapi0, writes0) = (sandbox.pbx.requests(), sandbox.pbx.writes());
        let started = Instant::now();
        let mut child = std::process::Command::new(&binary)
            .args(["sync", "users", "--once", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let pid = child.id();
        let mut peak = 0;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            peak = peak.max(vm_hwm(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        anyhow::ensure!(status.success(), "pbxgate sync failed: {status}");
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
    let ideal = (users + pbxgate::sandbox::demo_directory().len()).div_ceil(page);
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

/// Peak resident memory of a process, in KiB.
fn vm_hwm(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
