//! What the sync benchmarks share: the simulators, a config for the real binary, and a run
//! of `pbxgate sync WORKER --once` with its peak memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pbxgate::clock::SystemClock;
use pbxgate_sandbox::{DEMO_TENANT, Registration, Sandbox};

/// Entra, Graph and 3CX simulated on loopback, on the wall clock, for the app "bench".
pub async fn sandbox() -> anyhow::Result<Sandbox> {
    pbxgate::tls::provider();
    let registration = Registration {
        client_id: "bench".into(),
        client_secret: Some("bench-secret".into()),
        certificate: None,
        public_url: "https://pbx.example.com".into(),
    };
    let clock = Arc::new(SystemClock);
    let sandbox = Sandbox::start(&registration, ("bench", "xapi"), "p", None, clock).await?;
    // The service extension signs in with the password `write_config` gives it.
    let service = pbxgate_sandbox::DEMO_SERVICE_EXTENSION;
    sandbox
        .pbx
        .edit_extension(service, |e| e.access_password = Some("bench".into()));
    Ok(sandbox)
}

/// Writes `dir/pbxgate.toml` for the simulators, a store in `dir`, and the `extra` sections.
pub fn write_config(sandbox: &Sandbox, dir: &Path, extra: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("pbxgate.toml");
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
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
service_extension = "999"
service_password = "bench"
[store]
url = "sqlite://{db}"
[log]
level = "warn"
{extra}"#,
        entra = sandbox.entra_server.url(),
        graph = sandbox.graph_server.url(),
        pbx = sandbox.pbx_server.url(),
        db = dir.join("pbxgate.db").display(),
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs `pbxgate sync WORKER --once`; its peak RSS in KiB.
pub async fn run(binary: &str, worker: &str, config: &Path) -> anyhow::Result<u64> {
    let mut child = std::process::Command::new(binary)
        .args(["sync", worker, "--once", "--config"])
        .arg(config)
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
    anyhow::ensure!(status.success(), "pbxgate sync {worker} failed: {status}");
    Ok(peak)
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
