//! `[log]`: how log lines are written.

use serde::Deserialize;

/// How every log line is written (`[log] format`, or `--log-format`, which wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event: `LEVEL target: message key=value …` (the default).
    #[default]
    Text,
    /// One JSON object per line, the event's fields at its top level (README "Logging").
    Json,
}

/// `[log]`. Read once at start: a reload does not change how lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogConfig {
    /// `format`: `"text"` (default) or `"json"`.
    pub format: LogFormat,
}

/// `[log] format` in the TOML `text`, read without the rest of the file (whose other keys are
/// ignored here, not checked): `None` when the text does not parse, or when `format` is
/// absent or not a format. The full load refuses such a file, or defaults to text.
pub fn configured_format(text: &str) -> Option<LogFormat> {
    #[derive(Deserialize)]
    struct OnlyLog {
        log: Option<OnlyFormat>,
    }
    #[derive(Deserialize)]
    struct OnlyFormat {
        format: Option<LogFormat>,
    }
    toml::from_str::<OnlyLog>(text).ok()?.log?.format
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_read_without_the_rest_of_the_file() {
        let json = "[server]\nlisten = \"x\"\nunknown = 1\n[log]\nformat = \"json\"\n";
        assert_eq!(configured_format(json), Some(LogFormat::Json));
        assert_eq!(
            configured_format("[log]\nformat = \"text\""),
            Some(LogFormat::Text)
        );
        for none in ["", "[log]\n", "[log]\nformat = \"xml\"", "not toml ["] {
            assert_eq!(configured_format(none), None, "{none}");
        }
    }
}
