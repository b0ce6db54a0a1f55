//! Creates a session in the store named by a config file and prints the cookie value.
//! For benchmarks and load tests only: `cargo run --release --example mint_session -- CONFIG`.

use std::sync::Arc;

use pbxgate::clock::SystemClock;
use pbxgate::config::Config;
use pbxgate::session::{NewSession, Sessions};
use pbxgate::store::Store;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| pbxgate::config::DEFAULT_PATH.into());
    let config = Config::load(path.as_ref())?;
    let store = Store::open(&config.store.url).await?;
    let sessions = Sessions::new(store.clone(), Arc::new(SystemClock), &config);
    let id = sessions
        .create(NewSession {
            user_key: "bench:user".into(),
            upn: "bench@example.com".into(),
            extension: "100".into(),
            idp_sid: None,
            login_hint: None,
        })
        .await?;
    println!("{}={id}", sessions.cookie_name());
    store.close().await;
    Ok(())
}
