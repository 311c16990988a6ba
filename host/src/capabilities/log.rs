//! `algobanana:plugin/log`: levelled, size-capped log lines. Lines go to the
//! host's tracing output and into the call's audit row.

use serde::Serialize;

use crate::plugins::bindings::log::{self, Level};
use crate::plugins::state::PluginState;

/// Appended to a line cut at the per-line cap.
const TRUNCATED_MARK: &str = "…[truncated]";

/// One kept log line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The text, truncated at the line cap.
    pub message: String,
}

/// Per-call log state.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    /// Lines kept so far.
    pub lines: Vec<LogLine>,
    /// Bytes kept so far.
    pub bytes: usize,
    /// Lines dropped after the per-call budget ran out.
    pub dropped: u32,
    /// Per-call byte budget.
    pub budget: usize,
    /// Per-line cap.
    pub line_cap: usize,
    /// Which plugin (for the tracing output).
    pub plugin: String,
}

impl LogState {
    /// Log state with the given caps.
    pub fn new(plugin: String, budget: usize, line_cap: usize) -> Self {
        Self {
            plugin,
            budget,
            line_cap,
            ..Self::default()
        }
    }

    /// Records one line, applying both caps.
    pub fn write(&mut self, level: Level, message: &str) {
        let level = match level {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        if self.bytes >= self.budget {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        let cap = self.line_cap.min(self.budget - self.bytes);
        let mut text = String::new();
        if message.len() > cap {
            let mut end = cap;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            text.push_str(&message[..end]);
            text.push_str(TRUNCATED_MARK);
        } else {
            text.push_str(message);
        }
        // Control characters would let a plugin forge lines in a terminal or log file.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { '\u{fffd}' } else { c })
            .collect();
        self.bytes += text.len().min(cap);
        tracing::info!(target: "plugin", plugin = %self.plugin, level, "{text}");
        self.lines.push(LogLine { level, message: text });
    }
}

impl log::Host for PluginState {
    fn write(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.log.write(level, &message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_truncated_and_marked() {
        let mut s = LogState::new("p".into(), 4096, 8);
        s.write(Level::Info, "0123456789");
        assert_eq!(s.lines[0].message, "01234567…[truncated]");
    }

    #[test]
    fn lines_past_the_budget_are_counted_not_kept() {
        let mut s = LogState::new("p".into(), 10, 8);
        for _ in 0..5 {
            s.write(Level::Warn, "12345");
        }
        assert_eq!(s.lines.len(), 2);
        assert_eq!(s.dropped, 3);
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let mut s = LogState::new("p".into(), 100, 100);
        s.write(Level::Info, "ok\nERROR fake line");
        assert!(!s.lines[0].message.contains('\n'));
    }
}
