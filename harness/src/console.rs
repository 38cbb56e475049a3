//! Terminal output: one line per case and variant as they finish, then a summary.
//!
//! Lines are plain text (no colour when stdout is not a terminal), so CI logs stay readable.

use std::io::{IsTerminal, Write};

use crate::results::{CaseResult, CaseStatus, Outcome, Results};

const INDENT: &str = "         ";

/// At most `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= n {
        s
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

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
        if case.status != CaseStatus::Ran {
            let err = case.error.as_ref();
            let message = err.map(|e| e.message.as_str()).unwrap_or("unknown error");
            let kind = err.map(|e| e.kind.as_str()).unwrap_or("error");
            let mut lines = vec![format!(
                "{} {}: [{kind}] {message}",
                self.paint(
                    match case.status {
                        CaseStatus::Crashed => "CRASH",
                        CaseStatus::Timeout => "TIMEOUT",
                        CaseStatus::Interrupted => "STOP",
                        _ => "ERROR",
                    },
                    None
                ),
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
        let mut lines = Vec::new();
        for (variant, v) in &case.variants {
            lines.push(format!(
                "{} {}/{variant}: {}  ({:.0} ms)",
                self.paint(v.outcome.label(), Some(v.outcome)),
                case.name,
                clip(&v.message, 400),
                v.export.seconds * 1e3 + v.run_ms
            ));
            if v.outcome == Outcome::Pass {
                continue;
            }
            for f in &v.findings {
                let at = f
                    .location
                    .as_deref()
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                lines.push(format!(
                    "{INDENT}{}{at}: {}",
                    f.pitfall,
                    clip(&f.summary, 300)
                ));
                for e in f.evidence.iter().take(3) {
                    lines.push(format!("{INDENT}  - {}", clip(e, 300)));
                }
                lines.push(format!("{INDENT}  fix: {}", f.hint));
            }
            if let Some(cx) = &v.counterexample {
                lines.push(format!(
                    "{INDENT}minimal input: {} (shrunk from {} in {} tries): {}",
                    cx.inputs,
                    cx.from_sample,
                    cx.round_trips,
                    clip(&cx.detail, 200)
                ));
                lines.push(format!("{INDENT}replay: {}", cx.replay));
            }
        }
        if !case.variants.values().all(|v| v.outcome == Outcome::Pass) {
            for n in &case.notes {
                lines.push(format!("{INDENT}note: {}", clip(n, 300)));
            }
        }
        lines
    }

    pub fn print_case(&self, case: &CaseResult) {
        let mut out = std::io::stdout().lock();
        for line in self.case_lines(case) {
            let _ = writeln!(out, "{line}");
        }
    }

    pub fn summary(results: &Results) -> String {
        let counts = results.counts();
        let parts: Vec<String> = [
            "PASS",
            "XFAIL",
            "FAIL",
            "XPASS",
            "ERROR",
            "case error",
            "crashed",
            "timeout",
            "interrupted",
        ]
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
