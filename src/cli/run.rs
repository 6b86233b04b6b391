//! `signgate run`: load the config, bind, serve (reloading on SIGHUP) until SIGINT or SIGTERM,
//! drain, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::logs::{init_tracing, run_format};
use super::signals::{SignalEvent, Signals};
use super::{EXIT_OK, EXIT_USAGE};
use crate::admin::{Admin, AdminListener};
use crate::canary::Canaries;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, LogFormat};
use crate::error::StartupError;
use crate::fdlimit::FdBudget;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::secret_watch::{SecretFiles, WATCH_EVERY};
use crate::workers::Workers;

/// Runs the gateway from the config at `path`: one single-threaded runtime per worker,
/// reloading `path` on SIGHUP, until SIGINT or SIGTERM; exit 0 after a clean drain. Logs in
/// `log_format` if given (the `--log-format` flag), else in the config's `[log] format`.
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
        Signals::install().map_err(StartupError::Runtime)?
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
    let admin = match admin_listener {
        Some(listener) => {
            let admin_addr = listener.addr;
            let admin = Arc::new(Admin::new(
                &config,
                Arc::clone(&metrics),
                Arc::clone(running.health()),
                Arc::clone(&clock),
            ));
            let running_admin = listener.start(Arc::clone(&admin))?;
            tracing::info!(local = %admin_addr, "admin listener");
            Some((admin, running_admin, admin_addr))
        }
        None => None,
    };
    // Written before the address is announced: whoever waits for that can signal at once.
    let pid_file = config.server.pid_file.clone();
    if let Some(path) = &pid_file {
        write_pid_file(path)?;
    }
    println!("signgate listening on http://{addr}");
    if let Some((_, _, admin_addr)) = &admin {
        println!("signgate admin on http://{admin_addr}/");
    }
    // One canary per route for the process, on this thread's runtime (driven by the loop
    // below): the workers' runtimes are for traffic.
    let mut canaries = {
        let _context = runtime.enter();
        Canaries::start(
            &config,
            Arc::clone(running.health()),
            Arc::clone(&metrics),
            Arc::clone(&clock),
        )
    };
    let mut secret_files = SecretFiles::watching(&config.secret_files);
    let mut reloader = Reloader::new(
        path,
        config,
        running.states().to_vec(),
        Arc::clone(&metrics),
        admin.as_ref().map(|(admin, _, _)| Arc::clone(admin)),
        clock,
    );
    let mut signals = signals;
    runtime.block_on(async {
        let mut look = tokio::time::interval(WATCH_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = signals.next() => match event {
                    SignalEvent::Reload => {}
                    SignalEvent::Stop => break,
                },
                _ = look.tick() => {
                    let changed = secret_files.changed();
                    if changed.is_empty() {
                        continue;
                    }
                    for file in &changed {
                        // The path only: the value is read by the reload, and never logged.
                        tracing::info!(secret_file = %file.display(), "secret file changed: reloading");
                        metrics.count_secret_file_change();
                    }
                }
            }
            // Refusals (an empty or unreadable secret file among them) are logged and counted
            // inside; the process serves on with the old config either way.
            if reloader.reload().is_ok() {
                canaries.apply(reloader.current());
            }
            secret_files.rewatch(&reloader.current().secret_files);
        }
    });
    drop(canaries);
    // The admin listener outlives the drain, so `/readyz` answers 503 throughout it.
    running.stop();
    if let Some((_, admin, _)) = admin {
        admin.stop();
    }
    if let Some(path) = &pid_file {
        remove_pid_file(path);
    }
    Ok(())
}

/// Writes this process's id to `path` (replacing a stale file) for `signgate reload`.
fn write_pid_file(path: &Path) -> Result<(), StartupError> {
    std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
        StartupError::PidFile {
            path: path.to_owned(),
            source,
        }
    })
}

/// Removes the pid file on a clean exit, unless another process has written its own since.
fn remove_pid_file(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|text| text.trim() == std::process::id().to_string());
    if ours && let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(pid_file = %path.display(), error = %e, "cannot remove the pid file");
    }
}
