//! The `pbxgate` command: parses the CLI and wires the modules together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pbxgate::app::App;
use pbxgate::clock::SystemClock;
use pbxgate::config::{self, Config, LogFormat};
use pbxgate::http::Gateway;
use pbxgate::logging::EscapedStderr;
use pbxgate::sync::{Mode, RunStatus};

/// mimalloc: the proxy allocates small, short-lived buffers per request, where glibc's
/// allocator measurably costs throughput (bench/proxy.sh).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pbxgate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("PBXGATE_BUILD_COMMIT"), ")"),
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
        #[arg(long, env = config::CONFIG_ENV, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Run the gateway against the built-in sandbox (simulated 3CX) on loopback.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Where the demo keeps its config, certificates and store.
        #[arg(long, default_value = "data/demo")]
        dir: PathBuf,
    },
    /// Run a sync worker once; `--dry-run` prints the plan and changes nothing.
    Sync {
        worker: SyncWorker,
        /// Run once and exit (the schedule runs inside `serve`).
        #[arg(long)]
        once: bool,
        #[arg(long)]
        dry_run: bool,
        /// A full reconcile instead of the changes since the last run.
        #[arg(long)]
        full: bool,
        #[arg(long, env = config::CONFIG_ENV, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate the config and print it with secrets masked.
    CheckConfig {
        #[arg(long, env = config::CONFIG_ENV, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check every credential and permission against Entra ID, Graph, 3CX and the store;
    /// exit 0 when every enabled feature can work, 1 when not, 2 for an unusable config.
    Doctor {
        /// Also sign in to 3CX as this extension (impersonation), as a user's sign-in would.
        #[arg(long = "as", value_name = "EXTENSION")]
        as_extension: Option<String>,
        #[arg(long, env = config::CONFIG_ENV, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Register pbxgate in Entra ID (device-code sign-in of an administrator), or with
    /// `--print` show the registration and the admin-consent URL for doing it by hand.
    Setup {
        /// Print the app registration and the admin-consent URL; change nothing.
        #[arg(long)]
        print: bool,
        /// The public client the administrator signs in with (device code).
        #[arg(long, default_value = pbxgate::setup::DEFAULT_PUBLIC_CLIENT)]
        client_id: String,
        #[arg(long, env = config::CONFIG_ENV, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Work on the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy the SQLite store into a new file while pbxgate runs (PostgreSQL: use pg_dump).
    Backup {
        /// The backup file to create; an existing file is refused.
        path: PathBuf,
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SyncWorker {
    Users,
    Contacts,
    Presence,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        // One line with the chain of causes (each said once), no backtrace.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1).map(|c| c.to_string()) {
            if !msg.contains(&cause) {
                msg = format!("{msg}: {cause}");
            }
        }
        eprintln!("pbxgate: {msg}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    pbxgate::tls::provider();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Doctor {
            as_extension,
            config,
        } => doctor(&config, as_extension.as_deref()),
        Command::Setup {
            print,
            client_id,
            config,
        } => setup(print, client_id, config),
        Command::Store {
            command: StoreCommand::Backup { path, config },
        } => {
            let config = Config::load(&config)?;
            let backup =
                runtime()?.block_on(pbxgate::store::backup::backup(&config.store.url, &path))?;
            println!("{backup}");
            Ok(())
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            runtime()?.block_on(serve(config, None))
        }
        #[cfg(feature = "demo")]
        Command::Demo { listen, dir } => runtime()?.block_on(demo(listen, &dir)),
        Command::Sync {
            worker,
            once,
            dry_run,
            full,
            config,
        } => {
            anyhow::ensure!(
                once,
                "add --once: `pbxgate serve` runs the workers on their schedule"
            );
            let config = Config::load(&config)?;
            runtime()?.block_on(sync_once(config, worker, dry_run, full))
        }
    }
}

async fn sync_once(
    config: Config,
    worker: SyncWorker,
    dry_run: bool,
    full: bool,
) -> anyhow::Result<()> {
    init_logging(&config);
    let app = App::build(config, Arc::new(SystemClock))
        .await
        .context("could not start")?;
    let mode = if full { Mode::Full } else { Mode::Delta };
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let w = &app.workers;
    let report = match worker {
        SyncWorker::Users => w.runner.run(w.users.as_ref(), mode, dry_run, &stop).await?,
        SyncWorker::Contacts => {
            w.runner
                .run(w.contacts.as_ref(), mode, dry_run, &stop)
                .await?
        }
        SyncWorker::Presence => {
            w.runner
                .run(w.presence.as_ref(), mode, dry_run, &stop)
                .await?
        }
    };
    if report.status == RunStatus::Failed {
        let why = report.message.as_deref().unwrap_or("see the log");
        anyhow::bail!("the {} run failed: {why}", report.worker);
    }
    if dry_run {
        println!("Dry run ({:?}): nothing was changed.\n", report.mode);
        print!("{}", report.table());
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    anyhow::ensure!(
        report.status == RunStatus::Succeeded,
        "the run {}",
        report.status
    );
    Ok(())
}

/// `pbxgate doctor`: prints the checklist and exits 0 (every enabled feature can work), 1
/// (something to fix) or 2 (the config cannot be used at all).
fn doctor(path: &Path, as_extension: Option<&str>) -> anyhow::Result<()> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pbxgate: {e}");
            std::process::exit(2);
        }
    };
    let deps = pbxgate::doctor::Deps {
        config,
        clock: Arc::new(SystemClock),
        store: None,
        pbx: None,
        metrics: None,
    };
    let report = runtime()?.block_on(pbxgate::doctor::run(&deps, as_extension, true));
    println!("pbxgate doctor: {}", path.display());
    print!("{}", report.render());
    std::process::exit(if report.ok() { 0 } else { 1 });
}

fn setup(print: bool, client_id: String, config: PathBuf) -> anyhow::Result<()> {
    if print {
        let (config, client_known) = pbxgate::setup::load(&config)?;
        print!("{}", pbxgate::setup::print(&config, client_known));
        return Ok(());
    }
    let opts = pbxgate::setup::Options {
        config_path: config,
        public_client: client_id,
    };
    let mut out = std::io::stdout();
    runtime()?.block_on(pbxgate::setup::run(&opts, &SystemClock, &mut out))?;
    Ok(())
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
    println!("# Note: {}.\n", pbxgate::config::RECHECK_PERMISSION);
    print!("{}", config.to_masked_toml());
    Ok(())
}

/// Logs to stderr, one line per event: [`EscapedStderr`] escapes the control characters a
/// client could slip into a field (and so colours stay off).
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(EscapedStderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
    for f in config.loose_secret_files() {
        tracing::warn!(
            key = f.key,
            file = %f.path.display(),
            mode = %format_args!("{:04o}", f.mode),
            "secret file is readable by group or others; chmod 600 it"
        );
    }
}

async fn serve(config: Config, banner: Option<String>) -> anyhow::Result<()> {
    init_logging(&config);
    raise_open_files_limit();
    let gateway = Gateway::bind(config, Arc::new(SystemClock))
        .await
        .context("could not start")?;
    if let Some(banner) = banner {
        eprintln!("{banner}");
    }
    gateway.run(shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "demo")]
async fn demo(listen: std::net::SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let demo = pbxgate::demo::start(listen, dir).await?;
    let banner = demo.banner(dir);
    // The simulators live as long as `demo`, i.e. until the gateway stops.
    let result = serve(demo.config.clone(), Some(banner)).await;
    drop(demo);
    result
}

/// Raises the soft open-file limit to the hard one (each client connection costs one or two
/// descriptors; the usual soft default of 1,024 is soon reached) and logs the result.
fn raise_open_files_limit() {
    match pbxgate::http::raise_open_files_limit() {
        Ok((before, after)) => tracing::info!(
            soft = after.soft,
            hard = after.hard,
            was = before.soft,
            "open-file limit"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
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
