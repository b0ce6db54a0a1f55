//! The contacts worker against the simulated Graph (the demo tenant's contacts) and 3CX over
//! real HTTP: the documented mapping, idempotence, changes, moves and deletions, hand-made
//! entries, mailbox-less users, expired delta links, throttling and a 3CX outage.

use pbxgate::clock::{Clock, ManualClock, SystemClock};
use pbxgate::config::{Config, DedupeBy};
use pbxgate::sync::{Mode, RunReport, RunStatus};
use pbxgate_sandbox::graph::{MailboxAccess, SimContact};
use pbxgate_sandbox::{DEMO_SHARED_MAILBOX, DEMO_TENANT, Sandbox};
use serde_json::{Value, json};

use crate::support::*;

const ALICE: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const BOB: &str = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";

pub(crate) struct Env {
    pub(crate) sandbox: Sandbox,
    pub(crate) gw: TestGateway,
    pub(crate) dir: tempfile::TempDir,
}

/// The demo sandbox and a gateway whose contact sync reads the shared mailbox and (personal)
/// the users the user sync has given extensions.
pub(crate) async fn env(edit: impl FnOnce(&mut Config)) -> Env {
    init();
    let clock = ManualClock::new(SystemClock.now());
    let sandbox = sandbox(&registration(), &clock).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&sandbox.pbx_server.url(), dir.path(), |c| {
        c.entra.authority = sandbox.entra_server.url().parse().unwrap();
        c.entra.tenant_id = DEMO_TENANT.into();
        c.entra.graph_url = sandbox.graph_server.url().parse().unwrap();
        c.sync.users.extension_start = Some("200".into());
        c.sync.contacts.shared_mailboxes = vec![DEMO_SHARED_MAILBOX.into()];
        c.sync.contacts.personal = true;
    });
    edit(&mut cfg);
    let gw = TestGateway::start_with_clock(cfg, clock).await;
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let users = gw
        .app
        .workers
        .runner
        .run(gw.app.workers.users.as_ref(), Mode::Full, false, &stop)
        .await
        .unwrap();
    assert_eq!(users.status, RunStatus::Succeeded, "{users:?}");
    Env { sandbox, gw, dir }
}

impl Env {
    pub(crate) async fn run(&self, mode: Mode) -> RunReport {
        let (_tx, stop) = tokio::sync::watch::channel(false);
        self.gw
            .app
            .workers
            .runner
            .run(self.gw.app.workers.contacts.as_ref(), mode, false, &stop)
            .await
            .unwrap()
    }

    pub(crate) fn company(&self) -> Vec<Value> {
        self.sandbox.pbx.company_contacts()
    }

    fn named(&self, first: &str) -> Vec<Value> {
        self.company()
            .into_iter()
            .filter(|c| c["FirstName"] == first)
            .collect()
    }

    pub(crate) fn personal(&self, number: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .sandbox
            .pbx
            .personal_contacts(number)
            .iter()
            .map(|c| format!("{} {}", str_of(&c["FirstName"]), str_of(&c["LastName"])))
            .collect();
        names.sort();
        names
    }

    pub(crate) fn writes(&self) -> usize {
        self.sandbox.pbx.contact_writes()
    }

    /// Every pbxgate entry of the company phonebook, by tag; no tag twice.
    pub(crate) fn owned_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .company()
            .iter()
            .map(|c| str_of(&c["Tag"]))
            .filter(|t| t.starts_with("pbxgate:"))
            .collect();
        let n = tags.len();
        tags.sort();
        tags.dedup();
        assert_eq!(
            tags.len(),
            n,
            "a tag twice: duplicates in the company phonebook"
        );
        tags
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn count(r: &RunReport, kind: &str) -> u64 {
    r.applied.get(kind).copied().unwrap_or(0)
}

pub(crate) fn names(entries: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = entries
        .iter()
        .map(|c| format!("{} {}", str_of(&c["FirstName"]), str_of(&c["LastName"])))
        .map(|s| s.trim().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test]
async fn first_sync_creates_the_documented_entries_and_a_second_run_writes_nothing() {
    let env = env(|_| {}).await;
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    // Nora has no phone number and stays out; Otto comes from the Suppliers subfolder.
    assert_eq!(
        names(&env.company()),
        ["Fabrikam Support", "Lena Lopez", "Max Müller", "Otto Ortiz"]
    );
    let lena = &env.named("Lena")[0];
    assert_eq!(lena["CompanyName"], "Fabrikam");
    assert_eq!(lena["Title"], "Account Manager");
    assert_eq!(lena["PhoneNumber"], "+14255550111");
    assert_eq!(lena["Business"], "+14255550112");
    assert_eq!(lena["Email"], "lena.lopez@example.com");
    assert!(str_of(&lena["Tag"]).starts_with("pbxgate:"));
    let max = &env.named("Max")[0];
    assert_eq!(
        (&max["Department"], &max["Home"]),
        (&json!("Service"), &json!("+49305550198"))
    );
    // Personal phonebooks: Alice's default folder and her Family subfolder; Bob's contact.
    assert_eq!(env.personal("101"), ["Paul Parker", "Quinn Adams"]);
    assert_eq!(env.personal("102"), ["Rita Ross"]);
    assert_eq!(count(&r, "create"), 7);
    // Emil has no mailbox: reported, not an error.
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(count(&r, "skip"), 1);

    let writes = env.writes();
    env.sandbox.graph.reset_counters();
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        env.writes(),
        writes,
        "a run without changes writes nothing: {r:?}"
    );
    let planned: u64 = r
        .planned
        .iter()
        .filter(|(k, _)| **k != "skip")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(planned, 0, "{:?}", r.planned);
    // One delta call per known folder (shared: 2, Alice: 2, Bob: 1), in one batch; the
    // empty mailboxes of Carol and Dora are looked at again (2 calls each).
    assert_eq!(
        env.sandbox
            .graph
            .requests_to("/v1.0/users/reception@contoso.com/contactFolders/"),
        2
    );
    assert_eq!(
        env.sandbox
            .graph
            .requests_to(&format!("/v1.0/users/{ALICE}/contactFolders/")),
        2
    );
    assert_eq!(env.sandbox.graph.batch_calls(), 1);
}

#[tokio::test]
async fn changed_moved_and_deleted_contacts_follow_in_3cx() {
    let env = env(|_| {}).await;
    env.run(Mode::Delta).await;
    let g = &env.sandbox.graph;
    let ids = g.contact_ids(DEMO_SHARED_MAILBOX);
    let (lena, max, otto) = (&ids[1], &ids[2], &ids[4]);
    g.update_contact(DEMO_SHARED_MAILBOX, lena, |c| {
        c.mobile_phone = Some("+1 425 555 0999".into());
        c.job_title = None;
    });
    g.move_contact(DEMO_SHARED_MAILBOX, otto, None);
    g.delete_contact(DEMO_SHARED_MAILBOX, max);
    // Alice moves Quinn out of Family into her default folder, and deletes Paul.
    let alice = g.contact_ids(ALICE);
    g.move_contact(ALICE, &alice[1], None);
    g.delete_contact(ALICE, &alice[0]);
    let lena_id = env.named("Lena")[0]["Id"].clone();
    let otto_before = env.named("Otto")[0].clone();

    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(count(&r, "update"), 1, "{r:?}");
    assert_eq!(count(&r, "delete"), 2, "{r:?}");
    assert_eq!(count(&r, "create"), 0, "a move is not a new entry: {r:?}");
    let lena = &env.named("Lena")[0];
    assert_eq!(lena["Id"], lena_id);
    assert_eq!(lena["PhoneNumber"], "+14255550999");
    assert_eq!(
        lena["Title"], "",
        "a field cleared in Outlook is cleared in 3CX"
    );
    assert!(env.named("Max").is_empty());
    assert_eq!(
        env.named("Otto")[0],
        otto_before,
        "moved: the same entry, untouched"
    );
    assert_eq!(env.personal("101"), ["Quinn Adams"]);

    // A full run afterwards agrees: nothing to do.
    let writes = env.writes();
    let r = env.run(Mode::Full).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.writes(), writes, "{r:?}");
}

#[tokio::test]
async fn a_hand_made_entry_with_the_same_name_survives_every_run() {
    let env = env(|_| {}).await;
    let hand = json!({"FirstName": "Lena", "LastName": "Lopez", "PhoneNumber": "+1 555 HAND",
        "Tag": "crm:42"});
    let hand_id = env.sandbox.pbx.add_company_contact(hand);
    let untagged = env
        .sandbox
        .pbx
        .add_company_contact(json!({"FirstName": "Otto", "LastName": "Ortiz"}));
    let original = |id: i64| {
        env.company()
            .into_iter()
            .find(|c| c["Id"] == id)
            .expect("the hand-made entry is still there")
    };
    let (before, before2) = (original(hand_id), original(untagged));
    env.run(Mode::Delta).await;
    env.run(Mode::Full).await;
    let ids = env.sandbox.graph.contact_ids(DEMO_SHARED_MAILBOX);
    env.sandbox
        .graph
        .update_contact(DEMO_SHARED_MAILBOX, &ids[1], |c| {
            c.surname = "Lopez-Diaz".into()
        });
    env.run(Mode::Delta).await;
    env.sandbox
        .graph
        .delete_contact(DEMO_SHARED_MAILBOX, &ids[1]);
    env.sandbox
        .graph
        .delete_contact(DEMO_SHARED_MAILBOX, &ids[4]);
    let r = env.run(Mode::Delta).await;
    assert_eq!(count(&r, "delete"), 2, "{r:?}");
    env.run(Mode::Full).await;
    assert_eq!(original(hand_id), before);
    assert_eq!(original(untagged), before2);
    assert_eq!(
        env.named("Lena").len(),
        1,
        "only the hand-made Lena is left"
    );
}

#[tokio::test]
async fn a_user_without_a_mailbox_is_skipped_reported_and_not_retried_every_run() {
    let env = env(|_| {}).await;
    env.sandbox
        .graph
        .set_mailbox_access(BOB, MailboxAccess::Denied);
    let emil = env.sandbox.graph.user("emil.ek@contoso.com").unwrap().id;
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(count(&r, "skip"), 2, "{r:?}");
    let table = r.table();
    assert!(
        table.contains("emil.ek@contoso.com") && table.contains("MailboxNotEnabledForRESTAPI"),
        "{table}"
    );
    assert!(
        table.contains("bob.baker@contoso.com") && table.contains("access policy"),
        "{table}"
    );
    assert!(env.personal("102").is_empty());
    assert_eq!(env.personal("101").len(), 2, "the others are synced");

    env.sandbox.graph.reset_counters();
    let r = env.run(Mode::Delta).await;
    assert_eq!(count(&r, "skip"), 2, "still reported: {r:?}");
    assert!(r.table().contains("skipped until"));
    assert_eq!(
        env.sandbox
            .graph
            .requests_to(&format!("/v1.0/users/{emil}")),
        0
    );
    assert_eq!(
        env.sandbox.graph.requests_to(&format!("/v1.0/users/{BOB}")),
        0
    );

    // Once the policy admits Bob, the nightly full run picks him up.
    env.sandbox
        .graph
        .set_mailbox_access(BOB, MailboxAccess::Open);
    let r = env.run(Mode::Full).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.personal("102"), ["Rita Ross"]);
    assert!(
        env.sandbox
            .graph
            .requests_to(&format!("/v1.0/users/{emil}"))
            > 0
    );
}

#[tokio::test]
async fn an_expired_delta_link_resyncs_the_folders_without_duplicates() {
    let env = env(|_| {}).await;
    env.run(Mode::Delta).await;
    let before = env.owned_tags().len();
    env.sandbox.graph.expire_delta_tokens();
    env.sandbox.graph.add_contact(
        DEMO_SHARED_MAILBOX,
        None,
        SimContact::person("Sam", "Stone", "+1 425 555 0177"),
    );
    let ids = env.sandbox.graph.contact_ids(DEMO_SHARED_MAILBOX);
    env.sandbox
        .graph
        .delete_contact(DEMO_SHARED_MAILBOX, &ids[0]);
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(count(&r, "create"), 1, "only Sam is new: {r:?}");
    assert_eq!(
        count(&r, "delete"),
        1,
        "the deleted hotline, found by absence: {r:?}"
    );
    assert_eq!(env.owned_tags().len(), before);
    assert_eq!(env.personal("101"), ["Paul Parker", "Quinn Adams"]);
    let writes = env.writes();
    env.run(Mode::Delta).await;
    assert_eq!(env.writes(), writes);
}

#[tokio::test]
async fn throttling_storms_converge_without_duplicates() {
    let env = env(|_| {}).await;
    env.sandbox.graph.throttle_next(12, "0.05");
    env.sandbox
        .graph
        .fail_next(3, http::StatusCode::SERVICE_UNAVAILABLE);
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.owned_tags().len(), 4);
    assert_eq!(env.personal("101").len(), 2);
    // A storm that outlasts the retries fails the run; the next one converges.
    env.sandbox.graph.add_contact(
        DEMO_SHARED_MAILBOX,
        None,
        SimContact::person("Tia", "Tran", "+1 425 555 0188"),
    );
    env.sandbox.graph.throttle_next(10_000, "0");
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    env.sandbox.graph.throttle_next(0, "0");
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.owned_tags().len(), 5);
    assert_eq!(env.named("Tia").len(), 1);
}

#[tokio::test]
async fn a_3cx_outage_mid_run_fails_it_and_the_next_run_converges_with_nothing_lost() {
    let env = env(|_| {}).await;
    env.sandbox.pbx.go_down_after_writes(3);
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Failed, "{r:?}");
    assert!(r.message.unwrap().contains("3CX"));
    env.sandbox.pbx.heal();
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(
        names(&env.company()),
        ["Fabrikam Support", "Lena Lopez", "Max Müller", "Otto Ortiz"]
    );
    env.owned_tags();
    assert_eq!(env.personal("101"), ["Paul Parker", "Quinn Adams"]);
    assert_eq!(env.personal("102"), ["Rita Ross"]);
    let writes = env.writes();
    env.run(Mode::Delta).await;
    assert_eq!(env.writes(), writes);
}

#[tokio::test]
async fn the_same_person_in_two_shared_mailboxes_is_one_entry_only_if_asked() {
    for (dedupe, expected) in [(DedupeBy::None, 2), (DedupeBy::Email, 1)] {
        let env = env(|c| {
            c.sync
                .contacts
                .shared_mailboxes
                .push("sales@contoso.com".into());
            c.sync.contacts.dedupe_by = dedupe;
            c.sync.contacts.personal = false;
        })
        .await;
        env.sandbox
            .graph
            .add_mailbox("0e5a1f2b-1111-4222-8333-944455556666", "sales@contoso.com");
        env.sandbox.graph.add_contact(
            "sales@contoso.com",
            None,
            SimContact::person("Lena", "Lopez", "+1 425 555 0111"),
        );
        let r = env.run(Mode::Delta).await;
        assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
        assert_eq!(env.named("Lena").len(), expected, "{dedupe:?}");
        // Gone from one mailbox: the entry stays while the other still has the person.
        let id = env.sandbox.graph.contact_ids("sales@contoso.com")[0].clone();
        env.sandbox.graph.delete_contact("sales@contoso.com", &id);
        env.run(Mode::Delta).await;
        assert_eq!(env.named("Lena").len(), 1, "{dedupe:?}");
        assert!(env.sandbox.pbx.personal_contacts("101").is_empty());
    }
}

#[tokio::test]
async fn the_limit_is_reported_not_hit_and_a_dry_run_changes_nothing() {
    let env = env(|c| {
        c.sync.contacts.max_company_contacts = 3;
        c.sync.contacts.personal = false;
    })
    .await;
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let dry = env
        .gw
        .app
        .workers
        .runner
        .run(
            env.gw.app.workers.contacts.as_ref(),
            Mode::Delta,
            true,
            &stop,
        )
        .await
        .unwrap();
    assert_eq!(dry.planned.get("create"), Some(&3));
    assert!(dry.table().contains("limit of 3"), "{}", dry.table());
    assert_eq!(env.writes(), 0);
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.owned_tags().len(), 3);
    assert_eq!(count(&r, "skip"), 1);
    // The contact left out comes again next run (its folder's delta did not advance).
    let r = env.run(Mode::Delta).await;
    assert_eq!(count(&r, "skip"), 1, "{r:?}");
    assert_eq!(count(&r, "create"), 0);
}

// The binary blocks this thread while it runs; the simulators answer from the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_runs_the_contacts_worker_once_and_dry() {
    let env = env(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let c = &env.gw.app.config;
    let text = format!(
        "{}\n[sync.contacts]\nshared_mailboxes = [\"{DEMO_SHARED_MAILBOX}\"]\n",
        config_text(&env.sandbox.pbx_server.url(), dir.path(), "")
            .replace(
                "authority = \"http://127.0.0.1:9\"",
                &format!("authority = \"{}\"", c.entra.authority)
            )
            .replace(
                "graph_url = \"http://127.0.0.1:9\"",
                &format!("graph_url = \"{}\"", c.entra.graph_url)
            )
            .replace(TENANT, DEMO_TENANT)
    );
    let path = dir.path().join("pbxgate.toml");
    std::fs::write(&path, text).unwrap();
    let sync = |extra: &[&str]| {
        std::process::Command::new(binary())
            .args(["sync", "contacts", "--once"])
            .args(extra)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let dry = sync(&["--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    let err = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{out}{err}");
    assert!(
        out.contains("company phonebook: Lena Lopez"),
        "{out}{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(out.contains("create: 4"), "{out}");
    assert_eq!(env.writes(), 0, "a dry run writes nothing");
    let run = sync(&["--full"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(env.owned_tags().len(), 4);
}

#[tokio::test]
async fn contact_links_and_skips_work_on_postgresql() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    let env = env(move |c| c.store.url = url).await;
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(env.owned_tags().len(), 4);
    let ids = env.sandbox.graph.contact_ids(DEMO_SHARED_MAILBOX);
    env.sandbox
        .graph
        .delete_contact(DEMO_SHARED_MAILBOX, &ids[1]);
    let r = env.run(Mode::Delta).await;
    assert_eq!((count(&r, "delete"), count(&r, "skip")), (1, 1), "{r:?}");
    assert_eq!(env.owned_tags().len(), 3);
}

#[tokio::test]
async fn new_folders_are_found_by_the_full_run_and_a_deleted_one_takes_its_entries_along() {
    let env = env(|_| {}).await;
    env.run(Mode::Delta).await;
    let g = &env.sandbox.graph;
    // A new subfolder: the folder list is kept between delta runs; the full run finds it.
    let work = g.add_contact_folder(ALICE, "Work", None);
    let vic = SimContact::person("Vic", "Vo", "+44 7700 900789");
    g.add_contact(ALICE, Some(&work), vic);
    let r = env.run(Mode::Delta).await;
    assert_eq!(count(&r, "create"), 0, "{r:?}");
    let r = env.run(Mode::Full).await;
    assert_eq!(count(&r, "create"), 1, "{r:?}");
    assert_eq!(
        env.personal("101"),
        ["Paul Parker", "Quinn Adams", "Vic Vo"]
    );
    // Family deleted with Quinn in it: the entry goes at the next delta run.
    let quinn = g.contact_ids(ALICE)[1].clone();
    let links = env.gw.app.store.contact_links("101").await.unwrap();
    let family = links.iter().find(|l| l.contact_id == quinn).unwrap();
    g.delete_contact_folder(ALICE, &family.folder_id);
    let r = env.run(Mode::Delta).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:?}");
    assert_eq!(count(&r, "delete"), 1, "{r:?}");
    assert_eq!(env.personal("101"), ["Paul Parker", "Vic Vo"]);
    let writes = env.writes();
    env.run(Mode::Delta).await;
    assert_eq!(env.writes(), writes);
}
