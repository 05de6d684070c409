//! The `latch` command: `run` a config, `check` one, or start the `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use latch::Config;
use tracing::{error, info};

/// jemalloc with background threads, which purge freed pages after ~10 s, so
/// RSS comes back down after a burst of connections (see `benches/mem/`).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "latch",
    version,
    about = "A WebSocket-aware L7 load balancer with sticky sessions"
)]
struct Cli {
    /// Config file to run (same as `latch run --config FILE`).
    #[arg(long, short, global = false)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run with a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit 0 (valid) or 1 (with the error).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start built-in backends behind a TLS listener; needs no files.
    Demo {
        /// TLS listener address.
        #[arg(long, default_value = latch::demo::HTTPS)]
        https: SocketAddr,
        /// Plain HTTP listener address.
        #[arg(long, default_value = latch::demo::HTTP)]
        http: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match (cli.command, cli.config) {
        (Some(Command::Check { config }), _) => match Config::load(&config) {
            Ok(cfg) => {
                println!("{}: ok", config.display());
                print!("{}", latch::config::summary(&cfg));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        (Some(Command::Run { config }), _) | (None, Some(config)) => match Config::load(&config) {
            Ok(cfg) => runtime(cfg.server.workers, run(cfg)),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        (Some(Command::Demo { https, http }), _) => runtime(0, demo(https, http)),
        (None, None) => {
            eprintln!(
                "nothing to do: try `latch demo`, `latch run --config FILE` or `latch --help`"
            );
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    latch::log::init();
}

fn runtime(workers: usize, fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    match b.enable_all().build() {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> ExitCode {
    let grace = cfg.server.grace;
    // Installed before listening, so an early SIGHUP reloads rather than kills.
    let hangups = hangup_signal();
    match latch::start(cfg).await {
        Ok(handle) => {
            tokio::select! {
                _ = wait_for_stop() => {}
                _ = reload_on_hangup(&handle, hangups) => {}
            }
            info!(?grace, "stopping: draining connections");
            tokio::select! {
                _ = handle.shutdown() => { info!("stopped"); ExitCode::SUCCESS }
                _ = wait_for_stop() => { info!("second signal: stopping now"); ExitCode::SUCCESS }
            }
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(https: SocketAddr, http: SocketAddr) -> ExitCode {
    match latch::demo::start(https, http).await {
        Ok(d) => {
            let addrs = d.handle.listener_addrs();
            println!("latch demo is running with backends:");
            for (name, addr) in &d.backends {
                println!("  {name:<6} {addr}");
            }
            println!(
                "open  https://localhost:{}/  (self-signed certificate: accept the warning)",
                addrs[0].port()
            );
            println!("  or  http://localhost:{}/", addrs[1].port());
            println!("reload the page to see round robin; Ctrl-C stops");
            wait_for_stop().await;
            d.handle
                .shutdown_within(std::time::Duration::from_secs(2))
                .await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

fn hangup_signal() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup()).ok()
    }
}

/// Reloads the config file on every SIGHUP; never returns.
#[allow(clippy::let_unit_value)]
async fn reload_on_hangup(handle: &latch::Handle, hangups: Hangups) {
    #[cfg(unix)]
    if let Some(mut hup) = hangups {
        while hup.recv().await.is_some() {
            info!("SIGHUP: reloading the config file");
            if let Err(e) = handle.reload_file_async().await {
                error!("reload refused, the running config stays: {e}");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (handle, hangups);
    std::future::pending::<()>().await
}

/// Resolves on SIGINT or SIGTERM.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
