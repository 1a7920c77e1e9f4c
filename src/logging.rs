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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

/// The final error of a failed command: `eligd: error: …` as text, a JSON `ERROR` line as
/// JSON.
pub fn report_error(error: &anyhow::Error) {
    let text = format!("eligd: error: {error:#}");
    if json() {
        eprintln!("{}", json_line("ERROR", &text));
    } else {
        eprintln!("{text}");
    }
}

/// A note for the person running a command (a hint beside its output on standard output).
pub fn notice(text: &str) {
    if json() {
        eprintln!("{}", json_line("INFO", text));
    } else {
        eprintln!("{text}");
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
            eprintln!("{}", json_line("INFO", &text));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if json() && !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            eprintln!("{}", json_line("INFO", &text));
        }
        std::io::stderr().flush()
    }
}

impl Drop for LogLines {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
