//! Logging setup: `tracing` to stderr, as text (default) or JSON lines, at `--log-level`.
//!
//! Text lines inside a task show the task span (`task{task_id=…}:`). JSON lines are flat: the
//! fields of every enclosing span (so a task's `task_id`) sit at the top level next to the
//! event's own fields, which is what log pipelines index on.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

use crate::app::config::{LogFormat, LogLevel};

impl LogLevel {
    /// The `tracing` directive for this level, applied to this crate and its dependencies.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// The filter for `level`: this crate at `level`, dependencies capped at `warn` so their debug
/// output (which can include HTTP bodies and raw WebSocket frames) never reaches the log.
pub fn filter(level: LogLevel) -> EnvFilter {
    EnvFilter::new(format!("warn,oz_agent_worker={}", level.directive()))
}

/// Builds a subscriber writing `format` lines to `writer`, filtered by `filter`; `ansi` colours
/// text lines. [`init`] installs this for stderr; tests install it around a buffer.
pub fn dispatch<W>(filter: EnvFilter, format: LogFormat, ansi: bool, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    match format {
        LogFormat::Text => Dispatch::new(
            tracing_subscriber::registry().with(
                layer
                    .with_ansi(ansi)
                    .with_writer(OneLine(writer))
                    .with_filter(filter)
                    .with_filter(DropVagueSdkExportError),
            ),
        ),
        LogFormat::Json => Dispatch::new(
            tracing_subscriber::registry().with(
                layer
                    .with_writer(writer)
                    .with_ansi(false)
                    .fmt_fields(JsonFields::new())
                    .event_format(FlatJson)
                    .with_filter(filter)
                    .with_filter(DropVagueSdkExportError),
            ),
        ),
    }
}

/// The OpenTelemetry SDK's own line for a failed OTLP/HTTP export (`PeriodicReader.ExportError`
/// with `HTTP export failed: network error`, or only the status) says neither where nor why;
/// the HTTP client wrapper (`adapters/otel/export_log.rs`) already logged one line naming the
/// endpoint and the cause for that export, so this line is dropped. The SDK's other errors,
/// gRPC export failures among them (their text names the cause), pass.
struct DropVagueSdkExportError;

/// The event name the SDK gives a failed periodic export.
const SDK_EXPORT_ERROR: &str = "PeriodicReader.ExportError";

impl<S> tracing_subscriber::layer::Filter<S> for DropVagueSdkExportError {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if event.metadata().name() != SDK_EXPORT_ERROR {
            return true;
        }
        let mut vague = VagueHttpError(false);
        event.record(&mut vague);
        !vague.0
    }
}

/// Finds an `error` field that is the HTTP exporter's vague failure text.
struct VagueHttpError(bool);

impl Visit for VagueHttpError {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error" && value.contains("HTTP export failed") {
            self.0 = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "error" && format!("{value:?}").contains("HTTP export failed") {
            self.0 = true;
        }
    }
}

/// Writes each text event on one line: a newline or carriage return inside the event (an error
/// message, say, or a value with an output tail) is written as `\n` / `\r`, so a log line
/// can neither be split nor forged by what it quotes. The fmt layer writes an event, its
/// final newline included, in one `write_all`, which this writer handles in one call.
struct OneLine<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = OneLineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        OneLineWriter(self.0.make_writer_for(meta))
    }
}

/// The writer of [`OneLine`].
struct OneLineWriter<W>(W);

impl<W: std::io::Write> std::io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end): (&[u8], &[u8]) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, b"\n"),
            None => (buf, b""),
        };
        if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &byte in body {
            match byte {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(byte),
            }
        }
        line.extend_from_slice(end);
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Installs the global subscriber on stderr; colours only on a terminal and when `no_color`
/// (`NO_COLOR` set and not empty) is false.
pub fn init(level: LogLevel, format: LogFormat, no_color: bool) {
    let ansi = std::io::stderr().is_terminal() && !no_color;
    let dispatch = dispatch(filter(level), format, ansi, std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = tracing::dispatcher::set_global_default(dispatch);
}

/// One JSON object per line: `timestamp`, `level`, the fields of every enclosing span (outer
/// first, so an inner span or the event wins on a clash), then the event's fields, with the
/// formatted message under `message`.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = Map::new();
        let mut timestamp = String::new();
        if SystemTime
            .format_time(&mut Writer::new(&mut timestamp))
            .is_ok()
        {
            object.insert("timestamp".into(), Value::String(timestamp));
        }
        object.insert(
            "level".into(),
            Value::String(event.metadata().level().as_str().to_owned()),
        );
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let Some(fields) = extensions.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields) {
                    object.extend(fields);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut object));
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Records an event's fields into a JSON object.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// Log capture for unit tests.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::fmt::writer::MutexGuardWriter;

    use super::{dispatch, filter};
    use crate::app::config::{LogFormat, LogLevel};

    /// Collects written bytes (a `Mutex<Vec<u8>>` is a `MakeWriter`; the `Arc` shares it).
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = MutexGuardWriter<'a, Vec<u8>>;

        fn make_writer(&'a self) -> Self::Writer {
            self.0.make_writer()
        }
    }

    /// Runs `body` on this thread with the daemon's subscriber (`format`, `level`, no colour)
    /// and returns what it logged.
    pub(crate) fn capture(format: LogFormat, level: LogLevel, body: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let dispatch = dispatch(filter(level), format, false, buffer.clone());
        tracing::dispatcher::with_default(&dispatch, body);
        let bytes = buffer
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use tracing::{info, info_span, warn};

    use super::capture::capture;
    use super::*;

    fn emit() {
        info!("outside any task");
        let span = info_span!("task", task_id = %"t-42");
        span.in_scope(|| {
            warn!(code = 7_i64, flag = true, "inside {}", "the task");
        });
    }

    /// What the SDK's `otel_error!` emits for a failed periodic export (with `internal-logs`).
    fn sdk_export_error(error: String) {
        tracing::error!(
            name: "PeriodicReader.ExportError",
            target: "opentelemetry_sdk",
            name = "PeriodicReader.ExportError",
            error = error
        );
    }

    #[test]
    fn the_sdks_vague_http_export_line_is_dropped_and_its_other_errors_pass() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = capture(format, LogLevel::Info, || {
                sdk_export_error("Operation failed: HTTP export failed: network error".into());
                sdk_export_error(
                    "Operation failed: HTTP export failed with status code: 503".into(),
                );
                sdk_export_error("Operation failed: gRPC status Unavailable: tcp connect error: Connection refused".into());
                tracing::error!(target: "opentelemetry_sdk", name = "Other", error = "HTTP export failed: kept");
            });
            assert!(!text.contains("network error"), "{text}");
            assert!(!text.contains("status code: 503"), "{text}");
            assert!(text.contains("Connection refused"), "{text}");
            assert!(text.contains("kept"), "other events pass: {text}");
        }
    }

    #[test]
    fn json_lines_carry_span_fields_at_the_top_level() {
        let text = capture(LogFormat::Json, LogLevel::Info, emit);
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "outside any task");
        assert_eq!(lines[0]["level"], "INFO");
        assert!(lines[0].get("task_id").is_none(), "{text}");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.contains('T'))
        );
        assert_eq!(lines[1]["task_id"], "t-42");
        assert_eq!(lines[1]["message"], "inside the task");
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["code"], 7);
        assert_eq!(lines[1]["flag"], true);
        assert!(lines[1].get("span").is_none(), "flat, not nested: {text}");
    }

    #[test]
    fn a_text_event_with_newlines_stays_on_one_line() {
        let text = capture(LogFormat::Text, LogLevel::Info, || {
            warn!(detail = %"a\rb", "first\nFORGED ERROR second");
            info!("after");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with("first\\nFORGED ERROR second detail=a\\rb"),
            "{text}"
        );
        assert!(lines[1].ends_with("after"), "{text}");
    }

    #[test]
    fn text_lines_show_the_task_span() {
        let text = capture(LogFormat::Text, LogLevel::Info, emit);
        let task_line = text
            .lines()
            .find(|l| l.contains("inside the task"))
            .unwrap();
        assert!(task_line.contains("task{task_id=t-42}"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no colour when ansi is off: {text:?}"
        );
    }

    #[test]
    fn the_level_filters_this_crate_and_caps_dependencies_at_warn() {
        let text = capture(LogFormat::Text, LogLevel::Warn, emit);
        assert!(!text.contains("outside any task"), "{text}");
        assert!(text.contains("inside the task"), "{text}");
        let debug = capture(LogFormat::Text, LogLevel::Debug, || {
            tracing::debug!(target: "tungstenite::protocol", "raw frame");
            tracing::debug!("our debug");
        });
        assert!(!debug.contains("raw frame"), "{debug}");
        assert!(debug.contains("our debug"), "{debug}");
    }
}
