//! The `pbxgate` command: parses the CLI and wires the modules together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pbxgate::clock::SystemClock;
use pbxgate::config::{self, Config, LogFormat};
use pbxgate::sandbox;
use pbxgate::server::Gateway;

/// mimalloc: the proxy allocates small, short-lived buffers per request, where glibc's
/// allocator measurably costs throughput (bench/proxy.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pbxgate",
    version,
    about = "Microsoft 365 sign-in and data in front of 3CX"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run the gateway against the built-in sandbox (simulated 3CX) on loopback.
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where the demo keeps its config, certificates and store.
        #[arg(long, default_value = "data/demo")]
        dir: PathBuf,
    },
    /// Validate the config and print it with secrets masked.
    CheckConfig {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    pbxgate::tls::provider();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(serve(config, None))
        }
        Command::Demo { listen, dir } => runtime()?.block_on(demo(listen, &dir)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    println!(
        "# {}: valid. Effective configuration (secrets masked):\n",
        path.display()
    );
    print!("{}", config.to_masked_toml());
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config, banner: Option<String>) -> anyhow::Result<()> {
    init_logging(&config);
    let gateway = Gateway::bind(config, Arc::new(SystemClock))
        .await
        .context("pbxgate could not start")?;
    if let Some(banner) = banner {
        eprintln!("{banner}");
    }
    gateway.run(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn demo(listen: SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let demo = sandbox::demo::start(listen, dir).await?;
    let url = demo.config.server.public_url.clone();
    let users: String = pbxgate::sandbox::demo_users()
        .iter()
        .map(|u| format!("            {} ({})\n", u.upn, u.name))
        .collect();
    let banner = format!(
        "\n  pbxgate demo is running.\n\n  \
         Open      {url}  and pick a demo user on the simulated Microsoft sign-in page:\n{users}            (Carol has no extension in 3CX, to show that page too.)\n  \
         TLS       certificates from a throw-away demo CA: {ca}\n  \
         Health    curl --cacert {ca} {url}readyz\n  \
         Phones    curl --cacert {ca} {url}provisioning/{secret}/0015650a1b2c.cfg\n  \
         Config    {config}\n  \
         Simulated Entra ID at {entra}, 3CX at {pbx}\n\n  \
         Press Ctrl-C to stop.\n",
        ca = dir.join("tls/ca.pem").display(),
        secret = demo.provisioning_secret,
        config = demo.config_path.display(),
        entra = demo.sandbox.entra_server.url(),
        pbx = demo.sandbox.pbx_server.url(),
    );
    let config = demo.config.clone();
    // The simulators live as long as `demo`, i.e. until the gateway stops.
    let result = serve(config, Some(banner)).await;
    drop(demo);
    result
}

/// Resolves on Ctrl-C or SIGTERM (what systemd and orchestrators send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
