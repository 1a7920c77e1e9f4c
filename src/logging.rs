//! Where log lines go and in which form (`--log-format`): standard error, as text for people
//! or as one JSON object per line for a cluster's log pipeline (Loki, Elasticsearch, Cloud
//! Logging): `timestamp`, `level`, `target`, `message`, and each event's fields by their names
//! (`address`, `members`, `error`…). `auto` picks text on a terminal and JSON otherwise.
//!
//! Everything the binary writes to standard error goes through here, so in JSON mode every
//! line parses: tracing's events, the final error of a failed command ([`report_error`]), and
//! what a command tells the person running it ([`notice`], [`LogLines`]). Nothing here adds
//! personal data: the events are the same in both forms, and they name no national ID, phone
//! number, key or secret (docs/security.md, "Logs").

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use crate::cli::LogFormat;

static JSON: OnceLock<bool> = OnceLock::new();

/// Whether lines are JSON (`false` before [`init`]).
fn json() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// Sets up logging to standard error; `RUST_LOG` sets the level (default `info`).
pub fn init(format: LogFormat) {
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let _ = JSON.set(json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Libraries that log what they were given at `debug`: tokio-postgres logs every statement
/// with its parameters (national IDs among them). Capped at `info` whatever `RUST_LOG` asks.
const CAPPED: [&str; 2] = ["tokio_postgres", "postgres"];

/// The filter for `RUST_LOG` (default `info`), with [`CAPPED`] never above `info`.
pub fn filter(rust_log: Option<&str>) -> tracing_subscriber::EnvFilter {
    let mut filter = rust_log
        .and_then(|text| tracing_subscriber::EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    for target in CAPPED {
        if let Ok(directive) = format!("{target}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// One line in the JSON form, for what does not come from a tracing event.
fn json_line(level: &str, message: &str) -> String {
    let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "timestamp": timestamp,
        "level": level,
        "target": "eligd",
        "message": message,
    })
    .to_string()
}

/// One line to standard error; a closed one (a pipe whose reader went away) is not an error
/// worth a panic: the exit code still says what happened.
fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// The final error of a failed command: `eligd: error: …` as text, a JSON `ERROR` line as
/// JSON.
pub fn report_error(error: &anyhow::Error) {
    let text = format!("eligd: error: {error:#}");
    let line = if json() {
        json_line("ERROR", &text)
    } else {
        text
    };
    say(&line);
}

/// A note for the person running a command (a hint beside its output on standard output).
pub fn notice(text: &str) {
    if json() {
        say(&json_line("INFO", text));
    } else {
        say(text);
    }
}

/// A writer for a command's progress lines on standard error: as they are in text form, each
/// line an `INFO` object in JSON form.
pub struct LogLines {
    pending: Vec<u8>,
}

impl LogLines {
    pub fn new() -> LogLines {
        LogLines {
            pending: Vec::new(),
        }
    }
}

impl Default for LogLines {
    fn default() -> Self {
        LogLines::new()
    }
}

impl Write for LogLines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !json() {
            return std::io::stderr().write(bytes);
        }
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            say(&json_line("INFO", &text));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if json() && !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            say(&json_line("INFO", &text));
        }
        std::io::stderr().flush()
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn statement_parameters_stay_out_of_the_log_even_at_debug() {
        for rust_log in [
            None,
            Some("debug"),
            Some("trace"),
            Some("info,tokio_postgres=debug"),
        ] {
            let out = Captured::default();
            let writer = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(filter(rust_log))
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::debug!(target: "tokio_postgres::query", "executing statement s1 with parameters: [\"3903823333\"]");
                tracing::info!(target: "eligd::relay", "relay: active");
                tracing::debug!(target: "eligd::feed", "a debug line of ours");
            });
            let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("3903823333"), "{rust_log:?}: {text}");
            assert!(text.contains("relay: active"), "{rust_log:?}: {text}");
            let debug_asked = matches!(rust_log, Some("debug") | Some("trace"));
            assert_eq!(
                text.contains("a debug line of ours"),
                debug_asked,
                "{rust_log:?}: {text}"
            );
        }
    }
}
