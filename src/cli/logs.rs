//! Logging for the long-running commands: `tracing` to stderr as text or JSON lines, filtered
//! by `RUST_LOG`.

use std::path::Path;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Logs to stderr in `format`; `RUST_LOG` sets the filter (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only on a terminal, never into a log file or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // A second call (tests, demo) keeps the first subscriber.
    let _ = subscriber(format, filter, std::io::stderr, ansi).try_init();
}

/// The subscriber signgate logs through, writing lines in `format` to `writer`: public so the
/// tests read the very lines an operator gets.
///
/// JSON lines are one object each: `timestamp`, `level`, `target`, then the event's fields
/// (its message as `message`) at the top level, so the access log's fields are keys of the
/// line itself. Spans are left out: signgate opens none, and what libraries open would only
/// make the field set vary.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// The format `signgate run` logs in: `--log-format` if given, else the config's `[log]
/// format`. Tracing has to start before the config is loaded (loading logs warnings), so this
/// reads only the `[log]` table; a file that cannot be read or parsed logs as text, and the full
/// load that follows reports why.
pub fn run_format(flag: Option<LogFormat>, config_path: &Path) -> LogFormat {
    flag.unwrap_or_else(|| {
        std::fs::read_to_string(config_path)
            .ok()
            .and_then(|text| crate::config::log::configured_format(&text))
            .unwrap_or_default()
    })
}
