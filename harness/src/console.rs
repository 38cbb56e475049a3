//! Terminal output: one line per case and variant as they finish, then a summary.
//!
//! Lines are plain text (no colour when stdout is not a terminal or `NO_COLOR` is set), so CI
//! logs stay readable. A `.code` snapshot to review gets a `SNAP` line with its diff; a case
//! whose variants diverge shows the `.code` diff of each variant against its base where either
//! of the two did not pass.

use std::io::{IsTerminal, Write};

use crate::case::Variant;
use crate::results::{
    CaseResult, CaseStatus, Outcome, Results, SnapshotInfo, SnapshotState, VariantResult,
};
use crate::snapshot::paint_diff;

const INDENT: &str = "         ";

/// Warning lines shown under a PASS or XFAIL line; the rest are counted in one more line.
const MAX_WARNING_LINES: usize = 2;

/// Diff lines shown in the terminal per diff; the whole diff is in results.json.
const MAX_DIFF_LINES: usize = 60;

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

/// A green variant's warnings (tracer warnings at the user's lines first, device pins only its
/// graph has), at most `MAX_WARNING_LINES` and a count of the rest. Checks not judged have their
/// own `WARN` line; a warning a finding cites (an xfail's evidence) is not said twice, and a
/// divergent variant shows these as its findings' evidence instead.
fn warning_lines(case: &CaseResult, variant: Variant, lines: &mut Vec<String>) {
    let warnings: Vec<_> = crate::attention::warnings(case, variant, &crate::diagnose::short_path)
        .into_iter()
        .filter(|w| w.kind != crate::attention::Kind::NotJudged)
        .filter(|w| !case.variants.get(&variant).is_some_and(|v| w.cited_by(v)))
        .collect();
    for w in warnings.iter().take(MAX_WARNING_LINES) {
        lines.push(format!("{INDENT}warning: {}", clip(&w.text, 200)));
    }
    if warnings.len() > MAX_WARNING_LINES {
        lines.push(format!(
            "{INDENT}warning: … {} more in the report",
            warnings.len() - MAX_WARNING_LINES
        ));
    }
}

impl Console {
    /// Plain output, whatever stdout is (for tests and logs).
    pub fn plain() -> Self {
        Console { color: false }
    }

    /// A diff, indented and coloured, cut at `MAX_DIFF_LINES`.
    fn diff_lines(&self, diff: &str, out: &mut Vec<String>) {
        let lines = paint_diff(diff, self.color);
        let n = lines.len();
        for l in lines.into_iter().take(MAX_DIFF_LINES) {
            out.push(format!("{INDENT}  {l}"));
        }
        if n > MAX_DIFF_LINES {
            out.push(format!(
                "{INDENT}  … {} more lines in results.json",
                n - MAX_DIFF_LINES
            ));
        }
    }

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
            let kind = err
                .map(|e| e.kind.as_str())
                .unwrap_or_else(|| "error".into());
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
            let time = if case.cached {
                "cached".to_string()
            } else {
                format!("{:.0} ms", v.export.seconds * 1e3 + v.run_ms)
            };
            lines.push(format!(
                "{} {}/{variant}: {}  ({time})",
                self.paint(v.outcome.label(), Some(v.outcome)),
                case.name,
                clip(&v.message, 400),
            ));
            // A check that could not run says so, whatever the outcome.
            for w in &v.not_judged {
                lines.push(format!(
                    "{} {}/{variant}: {}",
                    self.paint("WARN  ", None),
                    case.name,
                    clip(w, 400)
                ));
            }
            if v.outcome.is_ok() {
                warning_lines(case, *variant, &mut lines);
            }
            if v.outcome != Outcome::Pass {
                self.finding_lines(v, &mut lines);
            }
            if let Some(snap) = &v.snapshot {
                self.snapshot_lines(&case.name, *variant, snap, &mut lines);
            }
        }
        if !case.variants.values().all(|v| v.outcome == Outcome::Pass) {
            for n in &case.notes {
                lines.push(format!("{INDENT}note: {}", clip(n, 300)));
            }
            self.code_diff_lines(case, &mut lines);
        }
        lines
    }

    /// The `.code` diff of each variant that, or whose base, did not pass, in definition order.
    fn code_diff_lines(&self, case: &CaseResult, lines: &mut Vec<String>) {
        let passed = |v: Variant| {
            case.variants
                .get(&v)
                .is_some_and(|r| r.outcome == Outcome::Pass)
        };
        for d in case.variant_diffs() {
            let (a, b) = (d.base, d.variant);
            if passed(a) && passed(b) {
                continue;
            }
            if d.diff.is_empty() {
                lines.push(format!("{INDENT}code: {a} and {b} .code are the same"));
            } else {
                lines.push(format!("{INDENT}code: {a} vs {b} .code:"));
                self.diff_lines(d.diff, lines);
            }
        }
    }

    /// Why a variant diverged: findings with evidence and hints, the minimal input, the replay.
    fn finding_lines(&self, v: &VariantResult, lines: &mut Vec<String>) {
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
            // The first three pieces of evidence, and every other place to look (`also:`).
            let (also, evidence): (Vec<&String>, Vec<&String>) =
                f.evidence.iter().partition(|e| e.starts_with("also: "));
            for e in evidence.into_iter().take(3).chain(also) {
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

    /// A `SNAP` line, with the diff, for a snapshot that is new, changed or just accepted.
    fn snapshot_lines(
        &self,
        case: &str,
        variant: Variant,
        snap: &SnapshotInfo,
        lines: &mut Vec<String>,
    ) {
        let what = match snap.state {
            SnapshotState::New => "new: no stored snapshot",
            SnapshotState::Changed => "changed",
            SnapshotState::Accepted => "accepted",
            SnapshotState::Matched | SnapshotState::Skipped => return,
        };
        let (review, look) = if snap.state.needs_review() {
            (
                format!("; review: {} verify --accept", crate::command()),
                Outcome::Fail,
            )
        } else {
            (String::new(), Outcome::Pass)
        };
        lines.push(format!(
            "{} {case}/{variant}: .code snapshot {what} ({}){review}",
            self.paint("SNAP", Some(look)),
            snap.path
        ));
        if let Some(diff) = snap.diff.as_deref().filter(|d| !d.is_empty()) {
            self.diff_lines(diff, lines);
        }
    }

    pub fn print_case(&self, case: &CaseResult) {
        let mut out = std::io::stdout().lock();
        for line in self.case_lines(case) {
            let _ = writeln!(out, "{line}");
        }
    }

    /// `snapshots: 2 new, 1 changed (...)`, when any snapshot was checked.
    pub fn snapshot_summary(results: &Results) -> Option<String> {
        let counts = results.snapshot_counts();
        if counts.is_empty() {
            return None;
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(state, n)| {
                let name = serde_json::to_value(state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                format!("{n} {name}")
            })
            .collect();
        let review = if counts.keys().any(|s| s.needs_review()) {
            format!(
                ": review the diffs, then accept them all with `{} verify --accept`",
                crate::command()
            )
        } else {
            String::new()
        };
        Some(format!("snapshots: {}{review}", parts.join(", ")))
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
        let unjudged: usize = results
            .cases
            .iter()
            .flat_map(|c| c.variants.values())
            .filter(|v| !v.not_judged.is_empty())
            .count();
        let parts: Vec<String> = parts
            .into_iter()
            .chain((unjudged > 0).then(|| format!("{unjudged} with checks not judged")))
            .collect();
        format!(
            "{} cases, {} variants: {} in {:.1} s (torch {}{}, seed {})",
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
            off_cpu(results),
            results
                .seed
                .map(|s| s.to_string())
                .unwrap_or_else(|| "per case".into()),
        )
    }
}

/// `, on cuda:0` when cases ran elsewhere than on the CPU (a CPU run says nothing, as before).
fn off_cpu(results: &Results) -> String {
    let devices: std::collections::BTreeSet<&str> = results
        .cases
        .iter()
        .filter_map(|c| c.device.as_deref())
        .collect();
    if devices.iter().all(|d| *d == "cpu") {
        return String::new();
    }
    let list: Vec<&str> = devices.into_iter().collect();
    format!(", on {}", list.join(" and "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ran case with one traced variant of `outcome`, its snapshot and the code diff (and,
    /// when there is a diff, the scripted variant it compares with, which passed).
    fn case(outcome: &str, snapshot: serde_json::Value, code_diff: Option<&str>) -> CaseResult {
        let mut c: CaseResult = serde_json::from_value(serde_json::json!({
            "name": "c", "file": "c.yaml", "status": "ran", "duration_ms": 0,
            "code_diff": code_diff,
            "variants": {"traced": {
                "outcome": outcome, "pitfalls": [], "expected": [], "message": "m",
                "samples_run": 1, "samples_failed": 0, "max_abs": 0.0, "max_rel": 0.0,
                "run_ms": 0.0, "export": {"ok": true, "seconds": 0.0, "code": "def forward"},
                "snapshot": snapshot,
            }},
        }))
        .unwrap();
        if code_diff.is_some() {
            let mut scripted = c.variants.values().next().unwrap().clone();
            scripted.outcome = Outcome::Pass;
            scripted.snapshot = None;
            c.variants
                .insert(Variant::named("scripted").unwrap(), scripted);
        }
        c
    }

    #[test]
    fn the_summary_says_where_cases_ran_unless_on_the_cpu() {
        let on = |devices: &[&str]| {
            let cases = devices
                .iter()
                .map(|d| CaseResult {
                    device: Some(d.to_string()),
                    ..case("pass", serde_json::Value::Null, None)
                })
                .collect();
            let results: Results = serde_json::from_value(serde_json::json!({
                "schema": 1, "harness": "0", "torch": "2.13.0", "tch": "0.26.0",
                "python": "3.11", "seed": null, "duration_ms": 0, "complete": true, "cases": [],
            }))
            .unwrap();
            Console::summary(&Results { cases, ..results })
        };
        assert!(
            on(&["cpu"]).ends_with("(torch 2.13.0, seed per case)"),
            "{}",
            on(&["cpu"])
        );
        assert!(
            on(&["cuda:0", "cpu"]).ends_with("(torch 2.13.0, on cpu and cuda:0, seed per case)")
        );
    }

    /// The lines printed for a case, plain.
    #[track_caller]
    fn check(case: &CaseResult, expect: &[&str]) {
        assert_eq!(Console::plain().case_lines(case), expect);
    }

    /// A passing variant's warnings are printed under it: user code first, deduplicated, at most
    /// two and a count; a failing one shows them as evidence instead.
    #[test]
    fn warnings_under_green_variants() {
        let warning = |file: &str, line: u32| {
            serde_json::json!({"category": "TracerWarning", "message": "Converting a tensor to a Python boolean\nmore",
                "file": file, "line": line, "source_line": "if x.sum() > 0:", "count": 1})
        };
        let with = |outcome: &str, warnings: Vec<serde_json::Value>| {
            let mut c = case(outcome, serde_json::Value::Null, None);
            let v = c.variants.values_mut().next().unwrap();
            v.export.warnings = serde_json::from_value(serde_json::Value::Array(warnings)).unwrap();
            c
        };
        let lib = warning("/v/lib/python3.11/site-packages/torch/f.py", 9);
        check(
            &with("pass", vec![lib.clone(), warning("m.py", 3), warning("m.py", 3)]),
            &[
                "PASS   c/traced: m  (0 ms)",
                "         warning: TracerWarning at m.py:3: `if x.sum() > 0:`: Converting a tensor to a Python boolean",
                "         warning: TracerWarning at /v/lib/python3.11/site-packages/torch/f.py:9: `if x.sum() > 0:`: Converting a tensor to a Python boolean",
            ],
        );
        check(
            &with("xfail", vec![warning("m.py", 3), warning("m.py", 4), lib.clone()]),
            &[
                "XFAIL  c/traced: m  (0 ms)",
                "         warning: TracerWarning at m.py:3: `if x.sum() > 0:`: Converting a tensor to a Python boolean",
                "         warning: TracerWarning at m.py:4: `if x.sum() > 0:`: Converting a tensor to a Python boolean",
                "         warning: … 1 more in the report",
            ],
        );
        check(
            &with("fail", vec![warning("m.py", 3)]),
            &["FAIL   c/traced: m  (0 ms)"],
        );
        // An xfail's finding that cites the warning says it already.
        let mut cited = with("xfail", vec![warning("m.py", 3), warning("m.py", 4)]);
        let v = cited.variants.values_mut().next().unwrap();
        v.findings = serde_json::from_value(serde_json::json!([{"pitfall": "control_flow_erasure",
            "summary": "s", "evidence": ["TracerWarning at m.py:3: `if x.sum() > 0:`"], "hint": "h"}]))
        .unwrap();
        let lines = Console::plain().case_lines(&cited);
        let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("warning:")).collect();
        assert_eq!(warnings, ["         warning: TracerWarning at m.py:4: `if x.sum() > 0:`: Converting a tensor to a Python boolean"]);
    }

    /// A case of traced, scripted, frozen and optimized with these outcomes, each variant with
    /// a diff base holding its own one-line diff (`same`: an empty one).
    fn four_variants(outcomes: [Outcome; 4], same: &[&str]) -> CaseResult {
        let mut c = CaseResult::ran_for_test("c");
        for (name, outcome) in ["traced", "scripted", "frozen", "optimized"]
            .iter()
            .zip(outcomes)
        {
            let v = Variant::named(name).unwrap();
            let mut r = VariantResult::for_test(outcome);
            r.code_diff = v.diff_base().map(|base| crate::results::CodeDiff {
                diff_base: base,
                diff: if same.contains(name) {
                    String::new()
                } else {
                    format!("--- {base}\n+++ {v}\n-{base}\n+{v}\n")
                },
            });
            c.variants.insert(v, r);
        }
        c
    }

    /// The code lines under a case (everything indented: its variants have no findings).
    #[track_caller]
    fn check_code(case: &CaseResult, expect: &[&str]) {
        let lines = Console::plain().case_lines(case);
        let code: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with(INDENT))
            .map(|l| l.trim_start())
            .collect();
        assert_eq!(code, expect);
    }

    /// Each diff whose variant or base did not pass, in definition order: a frozen module's
    /// against the scripted one, and no traced-vs-scripted diff when both of those passed.
    #[test]
    fn code_diffs_of_the_variants_that_did_not_pass() {
        use Outcome::*;
        check_code(&four_variants([Pass, Pass, Pass, Pass], &[]), &[]);
        check_code(
            &four_variants([Pass, Pass, Xfail, Fail], &["optimized"]),
            &[
                "code: scripted vs frozen .code:",
                "--- scripted",
                "+++ frozen",
                "-scripted",
                "+frozen",
                "code: scripted and optimized .code are the same",
            ],
        );
        // Only traced fails: the traced-vs-scripted diff alone, as before.
        check_code(
            &four_variants([Fail, Pass, Pass, Pass], &[]),
            &[
                "code: traced vs scripted .code:",
                "--- traced",
                "+++ scripted",
                "-traced",
                "+scripted",
            ],
        );
        // A failing base shows the diff of every variant diffed against it.
        let lines = Console::plain().case_lines(&four_variants([Pass, Error, Pass, Pass], &[]));
        let heads: Vec<&String> = lines.iter().filter(|l| l.contains("code:")).collect();
        assert_eq!(
            heads,
            [
                "         code: traced vs scripted .code:",
                "         code: scripted vs frozen .code:",
                "         code: scripted vs optimized .code:",
            ]
        );
    }

    #[test]
    fn snapshot_lines() {
        let changed = serde_json::json!({"state": "changed", "path": "s/c__traced.snap",
            "diff": "--- stored\n+++ new\n@@ -1 +1 @@\n-a\n+b\n"});
        check(
            &case("pass", changed, Some("")),
            &[
                "PASS   c/traced: m  (0 ms)",
                "SNAP   c/traced: .code snapshot changed (s/c__traced.snap); review: harness verify --accept",
                "           --- stored",
                "           +++ new",
                "           @@ -1 +1 @@",
                "           -a",
                "           +b",
                "PASS   c/scripted: m  (0 ms)",
            ],
        );
        let matched = serde_json::json!({"state": "matched", "path": "p"});
        check(
            &case(
                "pass",
                matched.clone(),
                Some("--- traced\n+++ scripted\n-x\n+y\n"),
            ),
            &["PASS   c/traced: m  (0 ms)", "PASS   c/scripted: m  (0 ms)"],
        );
        // A divergent case shows the traced-vs-scripted diff.
        check(
            &case(
                "xfail",
                matched.clone(),
                Some("--- traced\n+++ scripted\n-x\n+y\n"),
            ),
            &[
                "XFAIL  c/traced: m  (0 ms)",
                "PASS   c/scripted: m  (0 ms)",
                "         code: traced vs scripted .code:",
                "           --- traced",
                "           +++ scripted",
                "           -x",
                "           +y",
            ],
        );
        check(
            &case("fail", matched, Some("")),
            &[
                "FAIL   c/traced: m  (0 ms)",
                "PASS   c/scripted: m  (0 ms)",
                "         code: traced and scripted .code are the same",
            ],
        );
        // Long diffs are cut; results.json has them whole.
        let long: String = (0..100).map(|i| format!("+{i}\n")).collect();
        let lines = Console::plain().case_lines(&case(
            "pass",
            serde_json::json!({"state": "changed", "path": "p", "diff": long}),
            None,
        ));
        assert_eq!(lines.len(), 2 + MAX_DIFF_LINES + 1);
        assert!(lines
            .last()
            .unwrap()
            .ends_with("40 more lines in results.json"));
    }
}
