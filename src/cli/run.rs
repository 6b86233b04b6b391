//! `signgate run`: load the config, bind, serve until SIGINT or SIGTERM, drain, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::logs::init_tracing;
use super::signals::ShutdownSignals;
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
    tracing::info!(config = %path.display(), "config loaded");
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
