//! The command line: argument types and the dispatch to each command.

mod demo;
mod explain;
mod run;
mod sign;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit code for success (and, for `explain`, a valid URL).
pub const EXIT_OK: u8 = 0;
/// Exit code of `explain` for a URL whose credentials are not valid.
pub const EXIT_INVALID: u8 = 1;
/// Exit code for a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// signgate: a reverse-proxy signing gateway for Filestack-style CDNs.
#[derive(Debug, Parser)]
#[command(name = "signgate", version, about)]
pub struct Cli {
    /// What to do (default: run the gateway).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Config file, for running without a subcommand.
    #[arg(long, default_value = "gateway.toml", global = false)]
    pub config: PathBuf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Run {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Print one JSON line of credentials for a route: {"policy","signature","expiry","url"}.
    Sign {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// The route whose limits and secret to use.
        #[arg(long)]
        route: String,
        /// The file handle to bind the policy to.
        #[arg(long)]
        handle: Option<String>,
        /// Expiry in unix seconds (default: now + ttl, rounded up to the bucket).
        #[arg(long)]
        expiry: Option<u64>,
    },
    /// Run the embedded demo: a stand-in CDN, a gallery site and the gateway in front.
    Demo {
        /// The gateway's address (the CDN and the site take ports of their own).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
    /// Validate the config: exit 0, or 2 with the reason.
    Check {
        /// Config file.
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Decode a CDN URL: what it asks for, what its policy grants, whether it is valid and why.
    #[command(after_help = explain::EXIT_CODES)]
    Explain(explain::Args),
}

/// Parses the process arguments and runs the command; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Sign {
            config,
            route,
            handle,
            expiry,
        }) => with_config(&config, |c| sign::run(c, &route, handle.as_deref(), expiry)),
        Some(Command::Check { config }) => with_config(&config, |c| {
            for warning in &c.warnings {
                eprintln!("signgate: warning: {warning}");
            }
            println!(
                "{}: ok ({} route{})",
                config.display(),
                c.routes.len(),
                if c.routes.len() == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_OK)
        }),
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Run { config }) => run::run(&config),
        Some(Command::Demo { listen }) => demo::run(listen),
        None => run::run(&cli.config),
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
