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
