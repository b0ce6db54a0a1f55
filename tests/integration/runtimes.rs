//! Serving runtimes (issue 17): each connection is served by the per-core runtime with the
//! fewest open, so that a handful of keep-alive clients keeps every core busy; the split is
//! counted per runtime in `/metrics`.

use std::collections::BTreeMap;

use crate::support::*;

/// The per-runtime values of the counter `name` in a Prometheus text exposition.
fn per_runtime(text: &str, name: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix("{runtime=\""))
        .filter_map(|l| {
            let (runtime, value) = l.split_once("\"} ")?;
            Some((runtime.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn keep_alive_connections_are_spread_evenly_over_the_serving_runtimes() {
    let up = Upstream::start().await;
    let gw = TestGateway::start(&up.url(), |_| {}).await;
    let runtimes = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    const HELD: u64 = 16;
    // One client each: each holds its own keep-alive connection, open until the end.
    let mut held = Vec::new();
    for _ in 0..HELD {
        let c = client();
        let res = c.get(gw.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        held.push(c);
    }
    let text = gw.metrics().await;
    let conns = per_runtime(&text, "pbxgate_serving_connections_total");
    let requests = per_runtime(&text, "pbxgate_serving_requests_total");
    assert_eq!(
        conns.len() as u64,
        runtimes,
        "one series per runtime: {text}"
    );
    // The held connections and the one asking for /metrics, one request each.
    assert_eq!(conns.values().sum::<u64>(), HELD + 1, "{conns:?}");
    assert_eq!(requests.values().sum::<u64>(), HELD + 1, "{requests:?}");
    for (runtime, n) in &conns {
        assert!(
            *n >= HELD / runtimes,
            "runtime {runtime} served {n} of {HELD} held connections: {conns:?}"
        );
    }
    drop(held);
    gw.stop().await;
}

/// The CPUs of a `Cpus_allowed_list` line's value ("0-3,6").
fn cpu_list(list: &str) -> Vec<usize> {
    list.trim()
        .split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn allowed_cpus(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    cpu_list(line)
}

/// The allowed CPUs of each serving thread of process `pid`, once all `threads` are up.
fn serving_thread_cpus(pid: u32, threads: usize) -> Vec<Vec<usize>> {
    for _ in 0..100 {
        let sets: Vec<Vec<usize>> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                comm.starts_with("pbxgate-serve-")
                    .then(|| allowed_cpus(&std::fs::read_to_string(t.join("status")).unwrap()))
            })
            .collect();
        if sets.len() == threads {
            return sets;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{threads} serving threads did not start");
}

#[tokio::test]
async fn serving_threads_are_pinned_one_per_cpu_unless_turned_off() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pbxgate.toml");
    std::fs::write(&path, config_text(&up.url(), dir.path(), "")).unwrap();
    // The gateway inherits this process's CPU set.
    let own = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let pinned = Process::serve(&path, &dir.path().join("pinned.log"));
    let sets = serving_thread_cpus(pinned.child.id(), threads);
    let log = std::fs::read_to_string(&pinned.log).unwrap();
    if threads > 1 && own.len() == threads {
        let mut each: Vec<usize> = sets
            .iter()
            .map(|s| match s[..] {
                [cpu] => cpu,
                _ => panic!("a serving thread on several CPUs: {sets:?}"),
            })
            .collect();
        each.sort();
        assert_eq!(each, own, "one CPU each, every allowed CPU used");
        assert!(log.contains("serving threads pinned"), "{log}");
    } else {
        // Fewer threads than CPUs (a CPU quota), or one: left to the scheduler.
        assert!(sets.iter().all(|s| *s == own), "{sets:?} vs {own:?}");
    }
    drop(pinned);

    let free = Process::serve_after(
        "export PBXGATE__SERVER__PIN_THREADS=false",
        &path,
        &dir.path().join("free.log"),
    );
    let sets = serving_thread_cpus(free.child.id(), threads);
    assert!(
        sets.iter().all(|s| *s == own),
        "pin_threads = false leaves every serving thread on every CPU: {sets:?} vs {own:?}"
    );
}
