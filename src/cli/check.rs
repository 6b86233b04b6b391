//! `signgate check`: validate a config without serving it, where its secrets may not be.

use std::path::Path;
use std::process::ExitCode;

use super::{EXIT_OK, EXIT_USAGE};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Rotation, SecretsNeeded};

/// Validates the config at `path`: exit 0 (warnings on stderr) or 2 with the key and the
/// reason. A secret variable or file that is not available here is a warning, so a config can
/// be checked in CI; with `strict` it is an error, as it is for `run`, and so is every other
/// warning (an unanchored upload `path`, a world-readable `secret_file`). Prints each route's
/// secret rotation, and refuses a `switch_at` that has passed while `secret_next_*` is set.
pub fn run(path: &Path, strict: bool) -> ExitCode {
    let needed = if strict {
        SecretsNeeded::Required
    } else {
        SecretsNeeded::Optional
    };
    match Config::load_with(path, needed) {
        Ok(config) => {
            let now = SystemClock.now_unix();
            let schedule = rotations(&config, now);
            for line in &schedule.lines {
                println!("{line}");
            }
            if let Some(error) = schedule.error {
                eprintln!("signgate: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
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

/// What `check` says of the configured secret rotations.
#[derive(Debug, Default)]
struct Schedule {
    /// One line per route with a rotation.
    lines: Vec<String>,
    /// A scheduled switch that has passed, which makes the config refused.
    error: Option<String>,
}

/// Each route's rotation at `now`, in words.
fn rotations(config: &Config, now: u64) -> Schedule {
    let mut schedule = Schedule::default();
    for route in &config.routes {
        let name = &route.name;
        let line = match &route.signing.rotation {
            Rotation::None => continue,
            Rotation::Overlap { .. } => format!(
                "route `{name}`: signs with the current secret; verifies the current and the next"
            ),
            Rotation::Scheduled { at, .. } if *at <= now => {
                schedule.error.get_or_insert_with(|| {
                    format!(
                        "route `{name}`: `switch_at`: {} has passed while `secret_next_*` is set: \
                         the next secret is already the one in use; make it `secret_*`, remove \
                         `secret_next_*` and `switch_at`, or set a switch in the future",
                        moment(*at)
                    )
                });
                continue;
            }
            Rotation::Scheduled { at, .. } => format!(
                "route `{name}`: switches to the next secret at {} (in {}); until then no URL \
                 handed out expires after it",
                moment(*at),
                humantime::format_duration(std::time::Duration::from_secs(at - now))
            ),
            Rotation::Deadline { at } if *at <= now => format!(
                "route `{name}`: `switch_at` {} has passed: write the new secret to the secret \
                 file, then remove `switch_at`",
                moment(*at)
            ),
            Rotation::Deadline { at } => format!(
                "route `{name}`: no URL handed out expires after {} (in {}); the new secret is \
                 read from the secret file when it changes",
                moment(*at),
                humantime::format_duration(std::time::Duration::from_secs(at - now))
            ),
        };
        schedule.lines.push(line);
    }
    schedule
}

/// `at` (unix seconds) as RFC 3339.
fn moment(at: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at))
        .to_string()
}
