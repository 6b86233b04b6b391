//! `signgate run`: load the config, bind, serve until SIGINT or SIGTERM, drain, exit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{EXIT_OK, EXIT_USAGE};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::error::StartupError;
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
    let workers = Workers::bind(config.server.listen, config.server.workers.get())?;
    tracing::info!(local = %workers.addr, routes = config.routes.len(), workers = config.server.workers.get(), "signgate listening");
    println!("signgate listening on http://{}", workers.addr);
    workers.run(&config, Arc::new(SystemClock), shutdown_signal())
}

/// Logs to stderr; `RUST_LOG` sets the filter (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (tests, demo) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
