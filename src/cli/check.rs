//! `signgate check`: validate a config without serving it, where its secrets may not be.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_OK, EXIT_USAGE};
use crate::config::{Config, SecretsNeeded};

/// Validates the config at `path`: exit 0 (warnings on stderr) or 2 with the key and the
/// reason. A secret variable or file that is not available here is a warning, so a config can
/// be checked in CI; with `strict` it is an error, as it is for `run`, and so is every other
/// warning (an unanchored upload `path`, a world-readable `secret_file`).
pub fn run(path: &Path, strict: bool) -> ExitCode {
    let needed = if strict {
        SecretsNeeded::Required
    } else {
        SecretsNeeded::Optional
    };
    match Config::load_with(path, needed) {
        Ok(config) => {
            let level = if strict { "error" } else { "warning" };
            for warning in &config.warnings {
                eprintln!("signgate: {level}: {warning}");
            }
            let count = config.warnings.len();
            if strict && count > 0 {
                eprintln!(
                    "signgate: {}: refused under --strict ({count} warning{})",
                    path.display(),
                    if count == 1 { "" } else { "s" }
                );
                return ExitCode::from(EXIT_USAGE);
            }
            let count = config.routes.len();
            println!(
                "{}: ok ({count} route{})",
                path.display(),
                if count == 1 { "" } else { "s" }
            );
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
