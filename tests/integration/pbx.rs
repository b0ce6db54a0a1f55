//! The 3CX client against the simulated XAPI: paging, the cached API token, error shapes.

use std::sync::Arc;

use pbxgate::clock::ManualClock;
use pbxgate::pbx::{PbxClient, PbxError};
use pbxgate_sandbox::pbx::{PbxSim, SimExtension, router};

use crate::support::*;

async fn sim_with(n: i64, clock: &ManualClock) -> (Arc<PbxSim>, pbxgate_sandbox::Running) {
    init();
    let extensions = (0..n)
        .map(|i| SimExtension {
            id: i + 1,
            number: format!("{}", 1000 + i),
            first_name: format!("First{i}"),
            last_name: "Last".into(),
            email: format!("user{i}@contoso.com"),
            access_password: None,
            enabled: true,
            mobile: String::new(),
            outbound_caller_id: String::new(),
            ..Default::default()
        })
        .collect();
    let sim = Arc::new(PbxSim::new(
        "p",
        ("pbxgate", "xapi-secret-value"),
        extensions,
        Arc::new(clock.clone()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = pbxgate_sandbox::spawn(listener, router(sim.clone()), None).unwrap();
    (sim, running)
}

fn client_for(url: &str, clock: &ManualClock) -> PbxClient {
    let dir = tempfile::tempdir().unwrap();
    let c = config(url, dir.path(), |_| {});
    PbxClient::new(&c.pbx, Arc::new(clock.clone())).unwrap()
}

#[tokio::test]
async fn users_are_read_in_pages_of_100_with_select() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(250, &clock).await;
    let pbx = client_for(&server.url(), &clock);
    let all = pbx.users(None).await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!(all[249].number, "1249");
    let found = pbx
        .users_by_email(&["USER7@contoso.com".into(), "nobody@x".into()])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].number, "1007");
    // $select keeps the credentials the default listing carries out of pbxgate's hands.
    let raw = reqwest::Client::new()
        .get(format!("{}/xapi/v1/Users", server.url()))
        .bearer_auth(
            secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string(),
        )
        .query(&[("$top", "1"), ("$select", "Id,Number")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!raw.contains("AuthPassword"), "{raw}");
}

#[tokio::test]
async fn the_api_token_is_cached_and_renewed_before_it_expires() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock);
    let first = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    let again = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    assert_eq!(first, again, "cached");
    clock.advance(3600 - 30);
    let renewed = secrecy::ExposeSecret::expose_secret(&pbx.api_token().await.unwrap()).to_string();
    assert_ne!(first, renewed, "renewed within the last minute of its life");

    // Concurrent callers share one refresh: 3CX keeps one live token per API client, so a
    // second refresh would invalidate the first caller's token.
    clock.advance(3600);
    let tokens = futures_util::future::join_all((0..8).map(|_| pbx.api_token())).await;
    let distinct: std::collections::HashSet<String> = tokens
        .into_iter()
        .map(|t| secrecy::ExposeSecret::expose_secret(&t.unwrap()).to_string())
        .collect();
    assert_eq!(distinct.len(), 1);
    assert_eq!(pbx.users(None).await.unwrap().len(), 1, "and it works");
}

#[tokio::test]
async fn a_token_refused_with_401_is_renewed_once() {
    let clock = ManualClock::new(START);
    let (sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock);
    pbx.api_token().await.unwrap();
    // Another client with the same credentials: 3CX keeps one live token per API client, so
    // the cached one is now refused.
    client_for(&server.url(), &clock).api_token().await.unwrap();
    let before = sim.requests();
    assert_eq!(pbx.users(None).await.unwrap().len(), 1);
    assert_eq!(
        sim.requests() - before,
        2,
        "the refused call and its repeat"
    );
}

#[tokio::test]
async fn errors_keep_3cx_s_message() {
    let clock = ManualClock::new(START);
    let (_sim, server) = sim_with(1, &clock).await;
    let pbx = client_for(&server.url(), &clock);
    let err = pbx.users(Some("DisplayName eq 'x'")).await.unwrap_err();
    match err {
        PbxError::Api {
            status, message, ..
        } => {
            assert_eq!(status, 400);
            assert!(message.contains("unsupported $filter field"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&server.url(), dir.path(), |_| {});
    c.pbx.client_secret = "wrong".to_string().into();
    let wrong = PbxClient::new(&c.pbx, Arc::new(clock.clone())).unwrap();
    let err = wrong.users(None).await.unwrap_err();
    assert!(
        matches!(err, PbxError::Credentials(ref m) if m.contains("valid user authentication")),
        "{err}"
    );
    let down = client_for("http://127.0.0.1:9", &clock);
    assert!(matches!(
        down.users(None).await,
        Err(PbxError::Unreachable(_))
    ));
}
