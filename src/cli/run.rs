//! `signgate run`: load the config, bind, serve until SIGINT or SIGTERM, drain, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::logs::{init_tracing, run_format};
use super::signals::ShutdownSignals;
use super::{EXIT_OK, EXIT_USAGE};
use crate::admin::{Admin, AdminListener};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LogFormat};
use crate::error::StartupError;
use crate::fdlimit::FdBudget;
use crate::metrics::Metrics;
use crate::workers::Workers;

/// Runs the gateway from the config at `path`: one single-threaded runtime per worker, until
/// SIGINT or SIGTERM; exit 0 after a clean drain. Logs in `log_format` if given (the
/// `--log-format` flag), else in the config's `[log] format`.
pub fn run(path: &Path, log_format: Option<LogFormat>) -> ExitCode {
    init_tracing(run_format(log_format, path));
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
    let admin_listener = config
        .admin
        .as_ref()
        .map(|admin| AdminListener::bind(admin.listen))
        .transpose()?;
    let workers = Workers::bind(config.server.listen, config.server.workers.get())?;
    let addr = workers.addr;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new(&config));
    let running = workers.start(&config, Arc::clone(&clock), Arc::clone(&metrics))?;
    tracing::info!(local = %addr, routes = config.routes.len(), workers = config.server.workers.get(), "signgate listening");
    println!("signgate listening on http://{addr}");
    let admin = match admin_listener {
        Some(listener) => {
            let admin_addr = listener.addr;
            let admin = Admin::new(&config, metrics, Arc::clone(running.health()), clock);
            let admin = listener.start(Arc::new(admin))?;
            tracing::info!(local = %admin_addr, "admin listener");
            println!("signgate admin on http://{admin_addr}/");
            Some(admin)
        }
        None => None,
    };
    runtime.block_on(signals.recv());
    // The admin listener outlives the drain, so `/readyz` answers 503 throughout it.
    running.stop();
    if let Some(admin) = admin {
        admin.stop();
    }
    Ok(())
}
