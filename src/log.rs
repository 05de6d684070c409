//! How the `latch` binary writes its log to stderr.
//!
//! - Colours only when stderr is a terminal (and `NO_COLOR` is unset): a file,
//!   a pipe or journald never gets ANSI codes.
//! - An access event whose message is a JSON object (`access_log = "json"`,
//!   see `proxy/access.rs`) is written as that object alone: no timestamp,
//!   level or target before it.
//! - While the config in force has `access_log = "json"` ([`set_json`]), every
//!   other event is a JSON object too (`timestamp`, `level`, `target`,
//!   `message` and its fields), so each line of stderr parses as JSON.
//!   Otherwise they keep tracing's text format.
//!
//! The library never installs this itself; an embedding program keeps its
//! own subscriber.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether the config in force asks for JSON lines.
static JSON: AtomicBool = AtomicBool::new(false);

/// Switches every log line to JSON (`true`) or back to text; set by
/// [`crate::start`] and each reload from `[server] access_log`.
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether stderr gets colours: a terminal, and no `NO_COLOR` (no-color.org).
pub fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the subscriber: level from `RUST_LOG` (default `info`), to stderr.
pub fn init() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = colours();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .event_format(Lines {
            text: Format::default().with_ansi(ansi),
        })
        .init();
}

/// The event formatter described at the top of this file.
pub struct Lines {
    text: Format,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let json = JSON.load(Ordering::Relaxed);
        let meta = event.metadata();
        if meta.target() == "access" || json {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if meta.target() == "access"
                && let Some(Value::String(m)) = fields.0.get("message")
                && m.starts_with('{')
            {
                return writeln!(writer, "{m}");
            }
            if json {
                return writeln!(writer, "{}", json_line(meta, fields.0));
            }
        }
        self.text.format_event(ctx, writer, event)
    }
}

/// A non-access event as one JSON object.
fn json_line(meta: &tracing::Metadata<'_>, fields: Map<String, Value>) -> String {
    let mut line = Map::new();
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    line.insert("timestamp".into(), Value::String(now));
    line.insert("level".into(), Value::String(meta.level().to_string()));
    line.insert("target".into(), Value::String(meta.target().to_string()));
    for (k, v) in fields {
        // The event's own fields never shadow the three above.
        line.entry(k).or_insert(v);
    }
    Value::Object(line).to_string()
}

/// An event's fields as JSON values (numbers and booleans kept as such).
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A subscriber that keeps the JSON line of the last event.
    #[derive(Default)]
    struct Capture(Mutex<Option<String>>);

    impl Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &Event<'_>) {
            let mut f = Fields::default();
            e.record(&mut f);
            *self.0.lock().unwrap() = Some(json_line(e.metadata(), f.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn other_events_become_json_objects() {
        let sub = Arc::new(Capture::default());
        tracing::subscriber::with_default(sub.clone(), || {
            tracing::warn!(target: "latch::x", tunnels = 3u64, level = "forged", "a \"b\"\n");
        });
        let line = sub.0.lock().unwrap().clone().expect("an event");
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "latch::x");
        assert_eq!(v["message"], "a \"b\"\n");
        assert_eq!(v["tunnels"], 3);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
