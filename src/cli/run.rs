//! `signgate run`: load the config, bind, serve until SIGINT or SIGTERM, drain, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_OK, EXIT_USAGE};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::StartupError;
use crate::fdlimit::FdBudget;
use crate::workers::Workers;

/// Runs the gateway from the config at `path`: one single-threaded runtime per worker, until
/// SIGINT or SIGTERM; exit 0 after a clean drain.
pub fn run(path: &Path) -> ExitCode {
    init_tracing();
    match run_workers(path) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run_workers(path: &Path) -> Result<(), StartupError> {
    let config = Config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match FdBudget::raise_for(&config) {
        Ok(budget) => match budget.warning() {
            Some(warning) => tracing::warn!("{warning}"),
            None => tracing::debug!(limit = budget.limit, "open-file limit"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StartupError::Runtime)?;
    let signals = {
        let _context = runtime.enter();
        ShutdownSignals::install().map_err(StartupError::Runtime)?
    };
    let workers = Workers::bind(config.server.listen, config.server.workers.get())?;
    let addr = workers.addr;
    let running = workers.start(&config, Arc::new(SystemClock))?;
    tracing::info!(local = %addr, routes = config.routes.len(), workers = config.server.workers.get(), "signgate listening");
    println!("signgate listening on http://{addr}");
    runtime.block_on(signals.recv());
    running.stop();
    Ok(())
}

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, demo) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never into a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// SIGINT and SIGTERM, caught from the moment this is built, so a signal that arrives between
/// "listening" and the first poll still means a clean stop rather than the default kill.
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers; call it inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first SIGINT or SIGTERM.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("SIGINT received"),
            _ = self.terminate.recv() => tracing::info!("SIGTERM received"),
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => tracing::info!("Ctrl-C received"),
            Err(_) => std::future::pending::<()>().await,
        }
    }
}
