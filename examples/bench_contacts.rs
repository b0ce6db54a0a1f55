//! The contact-sync benchmark behind `bench/contacts.sh`: U users with C contacts each (four
//! fifths in the default folder, the rest in a subfolder) and one shared mailbox of S contacts
//! in the simulated Graph (with a latency per call), the simulated 3CX, and the real
//! `pbxgate sync contacts --once` binary (after `sync users --once` has given everyone an
//! extension). Reports the first sync and a no-change incremental run: wall time, Graph
//! requests (batch members counted one by one) and `$batch` calls, XAPI requests and phonebook
//! writes, and the binary's peak RSS.
//!
//! `bench_contacts [USERS] [CONTACTS_PER_USER] [SHARED_CONTACTS] [LATENCY_MS] [PBXGATE_BINARY]`

#![allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]

use std::time::{Duration, Instant};

use pbxgate_sandbox::graph::{DirectoryUser, SimContact};

mod common;

struct Measured {
    wall: Duration,
    graph: usize,
    batches: usize,
    xapi: usize,
    writes: usize,
    peak_rss_kib: u64,
}

const SHARED: &str = "phonebook@contoso.com";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut num = |default: usize| -> anyhow::Result<usize> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (users, per_user, shared, latency) = (num(2_000)?, num(50)?, num(5_000)?, num(20)?);
    let binary = std::env::args()
        .nth(5)
        .unwrap_or_else(|| "target/release/pbxgate".into());
    let sandbox = common::sandbox().await?;
    let g = &sandbox.graph;
    for i in 0..users {
        let u = DirectoryUser::member(
            &format!("user{i:05}@contoso.com"),
            "Bench",
            &format!("{i:05}"),
        );
        let id = u.id.clone();
        g.add_user(u);
        let team = g.add_contact_folder(&id, "Team", None);
        for j in 0..per_user {
            let folder = (j % 5 == 4).then_some(team.as_str());
            let c = SimContact::person(
                "Contact",
                &format!("{i:05}x{j:03}"),
                &format!("+49 170 {i:05}{j:03}"),
            );
            g.add_contact(&id, folder, c);
        }
    }
    g.add_mailbox("6c1d7e2f-0000-4000-8000-000000000001", SHARED);
    for j in 0..shared {
        let c = SimContact::person("Shared", &format!("{j:05}"), &format!("+49 30 {j:07}"));
        g.add_contact(SHARED, None, c);
    }
    g.set_latency(Duration::from_millis(latency as u64));

    let dir = tempfile::tempdir()?;
    let extra = format!(
        "[sync.contacts]\nshared_mailboxes = [\"{SHARED}\"]\npersonal = true\n\
         max_company_contacts = 100000\nmax_personal_contacts = 1000\n\
         [sync.users]\nextension_start = \"1000\"\n"
    );
    let config = common::write_config(&sandbox, dir.path(), &extra)?;
    common::run(&binary, "users", &config).await?;
    let measure = async || -> anyhow::Result<Measured> {
        sandbox.graph.reset_counters();
        let (xapi0, writes0) = (sandbox.pbx.requests(), sandbox.pbx.contact_writes());
        let started = Instant::now();
        let peak_rss_kib = common::run(&binary, "contacts", &config).await?;
        Ok(Measured {
            wall: started.elapsed(),
            graph: sandbox.graph.requests(),
            batches: sandbox.graph.batch_calls(),
            xapi: sandbox.pbx.requests() - xapi0,
            writes: sandbox.pbx.contact_writes() - writes0,
            peak_rss_kib,
        })
    };
    let first = measure().await?;
    let again = measure().await?;

    let folders = users * 2 + 1;
    println!(
        "contacts sync: {users} users × {per_user} contacts ({folders} folders with the shared one), \
         a shared mailbox of {shared}, {latency} ms per Graph call"
    );
    println!(
        "{:<12} {:>9} {:>14} {:>8} {:>14} {:>12} {:>12}",
        "run", "wall_s", "graph_requests", "batches", "xapi_requests", "xapi_writes", "peak_rss_MB"
    );
    for (name, m) in [("first", &first), ("no-change", &again)] {
        println!(
            "{:<12} {:>9.2} {:>14} {:>8} {:>14} {:>12} {:>12.1}",
            name,
            m.wall.as_secs_f64(),
            m.graph,
            m.batches,
            m.xapi,
            m.writes,
            m.peak_rss_kib as f64 / 1024.0
        );
    }
    println!(
        "company entries: {}; no-change run: {:.2} Graph requests per folder",
        sandbox.pbx.company_contacts().len(),
        again.graph as f64 / folders as f64
    );
    Ok(())
}
