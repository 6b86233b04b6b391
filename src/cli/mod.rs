//! The command line: argument types and the dispatch to each command.

mod check;
#[cfg(feature = "demo")]
mod demo;
mod explain;
mod explain_scheme;
mod health;
pub mod logs;
mod reload;
mod run;
mod sign;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};

/// The config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "gateway.toml";

/// Exit code for success (and, for `explain`, a valid URL).
pub const EXIT_OK: u8 = 0;
/// Exit code of `explain` for a URL whose credentials are not valid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code of `health` when the gateway did not answer healthy.
pub const EXIT_UNHEALTHY: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// signgate: a reverse-proxy signing gateway for Filestack-style CDNs.
#[derive(Debug, Parser)]
#[command(name = "signgate", version, about)]
pub struct Cli {
    /// What to do (default: run the gateway).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file; may stand before or after the subcommand [default: gateway.toml].
    #[arg(long, value_name = "F", global = true)]
    pub config: Option<PathBuf>,
    /// Log lines as text or as one JSON object each; may stand before or after the subcommand
    /// [default: the config's `[log] format`, else text].
    #[arg(long, value_name = "FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run,
    /// Print one JSON line of credentials for a route: {"policy","signature","expiry","url"}.
    Sign {
        /// The route whose limits and secret to use.
        #[arg(long)]
        route: String,
        /// The file handle to bind the policy to.
        #[arg(long)]
        handle: Option<String>,
        /// Expiry in unix seconds, in the future (default: now + ttl, rounded up to the bucket).
        #[arg(long)]
        expiry: Option<u64>,
    },
    /// Run the embedded demo: a stand-in CDN, a gallery site and the gateway in front.
    #[cfg(feature = "demo")]
    Demo {
        /// The gateway's address (the CDN and the site take ports of their own).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Validate the config: exit 0, or 2 with the key and the reason. A secret that is not
    /// available in this shell is a warning.
    Check {
        /// Make warnings errors, and require every secret to be available, as `run` does.
        #[arg(long)]
        strict: bool,
    },
    /// Make the running gateway re-read its config, as SIGHUP does: signals the process whose
    /// id is in the pid file (`--pid-file`, or the config's `server.pid_file`).
    Reload {
        /// The pid file `signgate run` wrote [default: the config's `server.pid_file`].
        #[arg(long, value_name = "P")]
        pid_file: Option<PathBuf>,
    },
    /// Ask the running gateway's admin listener for `/healthz`: exit 0 on 200, 1 on anything
    /// else or no answer, 2 when there is no admin address. For a container's HEALTHCHECK.
    Health {
        /// The admin listener's address [default: the config's `admin.listen`; a wildcard
        /// address is asked on loopback].
        #[arg(long, value_name = "ADDR")]
        admin: Option<std::net::SocketAddr>,
    },
    /// Decode a CDN URL: what it asks for, what its policy grants, whether it is valid and why.
    #[command(after_help = explain::EXIT_CODES)]
    Explain(explain::Args),
}

/// Parses the process arguments and runs the command; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command {
        Some(Command::Sign {
            route,
            handle,
            expiry,
        }) => with_config(&config_path, |c| {
            sign::run(c, &route, handle.as_deref(), expiry)
        }),
        Some(Command::Check { strict }) => check::run(&config_path, strict),
        Some(Command::Reload { pid_file }) => reload::run(&config_path, pid_file.as_deref()),
        Some(Command::Health { admin }) => health::run(&config_path, admin),
        Some(Command::Explain(args)) => explain::run(&args, cli.config.as_deref()),
        #[cfg(feature = "demo")]
        Some(Command::Demo { listen }) => demo::run(listen, cli.log_format.unwrap_or_default()),
        Some(Command::Run) | None => run::run(&config_path, cli.log_format),
    }
}

fn with_config(path: &std::path::Path, then: impl FnOnce(&Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(config) => then(&config),
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
