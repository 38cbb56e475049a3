//! Terminal output: one line per case and variant as they finish, then a summary.
//!
//! Lines are plain text (no colour when stdout is not a terminal), so CI logs stay readable.

use std::io::{IsTerminal, Write};

use crate::results::{CaseResult, CaseStatus, Outcome, Results};

pub struct Console {
    color: bool,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }
}

impl Console {
    fn paint(&self, label: &str, outcome: Option<Outcome>) -> String {
        let code = match outcome {
            Some(Outcome::Pass) => "32",
            Some(Outcome::Xfail) => "33",
            Some(Outcome::Fail) | Some(Outcome::Xpass) | Some(Outcome::Error) => "31",
            None => "35",
        };
        if self.color {
            format!("\x1b[1;{code}m{label:<6}\x1b[0m")
        } else {
            format!("{label:<6}")
        }
    }

    /// The lines for one finished case.
    pub fn case_lines(&self, case: &CaseResult) -> Vec<String> {
        if case.status == CaseStatus::Error {
            let err = case.error.as_ref();
            let message = err.map(|e| e.message.as_str()).unwrap_or("unknown error");
            let kind = err.map(|e| e.kind.as_str()).unwrap_or("error");
            let mut lines = vec![format!(
                "{} {}: [{kind}] {message}",
                self.paint("ERROR", None),
                case.name
            )];
            if let Some(tb) = err.map(|e| &e.traceback).filter(|t| !t.is_empty()) {
                // The last frames, without the `^^^^` markers under the failing expression.
                let frames: Vec<&String> = tb
                    .iter()
                    .filter(|l| !l.trim().chars().all(|c| "^~ ".contains(c)))
                    .collect();
                let tail = &frames[frames.len().saturating_sub(4)..];
                lines.extend(tail.iter().map(|l| format!("         {l}")));
            }
            return lines;
        }
        case.variants
            .iter()
            .map(|(variant, v)| {
                format!(
                    "{} {}/{variant}: {}  ({:.0} ms)",
                    self.paint(v.outcome.label(), Some(v.outcome)),
                    case.name,
                    v.message,
                    v.export.seconds * 1e3 + v.run_ms
                )
            })
            .collect()
    }

    pub fn print_case(&self, case: &CaseResult) {
        let mut out = std::io::stdout().lock();
        for line in self.case_lines(case) {
            let _ = writeln!(out, "{line}");
        }
    }

    pub fn summary(results: &Results) -> String {
        let counts = results.counts();
        let parts: Vec<String> = ["PASS", "XFAIL", "FAIL", "XPASS", "ERROR", "case error"]
            .iter()
            .filter_map(|k| counts.get(k).map(|n| format!("{n} {}", k.to_lowercase())))
            .collect();
        format!(
            "{} cases, {} variants: {} in {:.1} s (torch {}, seed {})",
            results.cases.len(),
            results
                .cases
                .iter()
                .map(|c| c.variants.len())
                .sum::<usize>(),
            if parts.is_empty() {
                "nothing ran".to_string()
            } else {
                parts.join(", ")
            },
            results.duration_ms as f64 / 1e3,
            results.torch,
            results
                .seed
                .map(|s| s.to_string())
                .unwrap_or_else(|| "per case".into()),
        )
    }
}
