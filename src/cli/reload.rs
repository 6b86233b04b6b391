//! `signgate reload`: tell the running gateway to re-read its config, as SIGHUP does, through
//! the pid file it wrote.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::{EXIT_OK, EXIT_USAGE};
use crate::config::{Config, SecretsNeeded};

/// Why the gateway was not signalled.
#[derive(Debug, thiserror::Error)]
pub enum ReloadCommandError {
    /// The config (read to find `server.pid_file`) is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Neither `--pid-file` nor `server.pid_file`.
    #[error(
        "{}: no pid file: set `server.pid_file` (signgate run writes its process id there; restart it once to start writing it), pass --pid-file, or send SIGHUP to the gateway yourself (kill -HUP PID)",
        config.display()
    )]
    NoPidFile {
        /// The config that has no `server.pid_file`.
        config: PathBuf,
    },
    /// The pid file cannot be read.
    #[error("cannot read the pid file {}: {source} (is signgate run running?)", path.display())]
    Read {
        /// The pid file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The pid file does not hold a process id.
    #[error("{}: expected a process id, got {text:?}", path.display())]
    NotAPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The signal could not be sent.
    #[error("cannot send SIGHUP to process {pid} (from {}): {source}", path.display())]
    Signal {
        /// The process id.
        pid: i32,
        /// The pid file it came from.
        path: PathBuf,
        /// What the OS said (no such process: a stale pid file).
        #[source]
        source: std::io::Error,
    },
}

/// Sends SIGHUP to the process whose id is in `pid_file`, or in the `server.pid_file` of the
/// config at `config`: exit 0 once sent, 2 when it could not be. The gateway logs whether the
/// reload took and counts it in `signgate_config_reloads_total`.
pub fn run(config: &Path, pid_file: Option<&Path>) -> ExitCode {
    match signal(config, pid_file) {
        Ok((pid, path)) => {
            println!(
                "signgate: sent SIGHUP to process {pid} (from {}); the gateway logs whether the reload took",
                path.display()
            );
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn signal(config: &Path, pid_file: Option<&Path>) -> Result<(i32, PathBuf), ReloadCommandError> {
    let path = match pid_file {
        Some(path) => path.to_owned(),
        None => {
            // Only to find the pid file: the secrets need not be available in this shell. The
            // gateway validates the file in full itself.
            let loaded = Config::load_with(config, SecretsNeeded::Optional)?;
            loaded
                .server
                .pid_file
                .ok_or_else(|| ReloadCommandError::NoPidFile {
                    config: config.to_owned(),
                })?
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ReloadCommandError::Read {
        path: path.clone(),
        source,
    })?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| ReloadCommandError::NotAPid {
            path: path.clone(),
            text: text.trim().to_owned(),
        })?;
    send_hangup(pid).map_err(|source| ReloadCommandError::Signal {
        pid,
        path: path.clone(),
        source,
    })?;
    Ok((pid, path))
}

#[cfg(unix)]
fn send_hangup(pid: i32) -> std::io::Result<()> {
    use rustix::process::{Pid, Signal, kill_process};
    let pid = Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("not a process id"))?;
    kill_process(pid, Signal::HUP).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn send_hangup(_pid: i32) -> std::io::Result<()> {
    Err(std::io::Error::other("SIGHUP exists on Unix only"))
}
