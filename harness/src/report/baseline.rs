//! The regression view: this run's results against a baseline (a previous results.json).
//!
//! A pure function of two `Results`. Per case and variant it finds new failures (the baseline's
//! outcome kept the gate green, this one does not, or the case no longer runs), fixed variants
//! (the reverse), other outcome changes (`pass` ↔ `xfail`), changed `.code` (the exported
//! TorchScript text differs) and notable timing changes: a variant's export plus run time, or a
//! case's whole duration, at least [`TIMING_RATIO`] times slower or faster **and** at least
//! [`TIMING_MIN_MS`] apart (small timings are noise). New failures fail the gate.

use serde::Serialize;
use similar::TextDiff;

use crate::results::{CaseResult, CaseStatus, Results, VariantResult};

/// A timing change is notable when one side is at least this many times the other ...
pub const TIMING_RATIO: f64 = 2.0;
/// ... and they are at least this many milliseconds apart.
pub const TIMING_MIN_MS: f64 = 50.0;

/// What changed since the baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Regression {
    /// Where the baseline came from (a path), as shown in reports.
    pub baseline: String,
    /// When the baseline run started, if it says.
    pub baseline_started_at: Option<String>,
    /// Green in the baseline, not green now.
    pub new_failures: Vec<Change>,
    /// Not green in the baseline, green now.
    pub fixed: Vec<Change>,
    /// Green both times but another outcome (`pass` ↔ `xfail`), or red both times but another.
    pub changed: Vec<Change>,
    pub code_changes: Vec<CodeChange>,
    pub timing: Vec<Timing>,
    /// Cases only this run has.
    pub added: Vec<String>,
    /// Cases only the baseline has.
    pub removed: Vec<String>,
}

/// One variant's outcome, then and now (`case error` when the case did not run).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub case: String,
    pub variant: String,
    pub before: String,
    pub after: String,
    /// Why, now (the variant's message or the case error).
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeChange {
    pub case: String,
    pub variant: String,
    /// Unified diff, `--- baseline` / `+++ current`.
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    pub case: String,
    /// `None`: the whole case.
    pub variant: Option<String>,
    pub before_ms: f64,
    pub after_ms: f64,
}

impl Timing {
    pub fn slower(&self) -> bool {
        self.after_ms > self.before_ms
    }
}

impl Regression {
    /// Does the regression view fail the gate?
    pub fn fails_gate(&self) -> bool {
        !self.new_failures.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.new_failures.is_empty()
            && self.fixed.is_empty()
            && self.changed.is_empty()
            && self.code_changes.is_empty()
            && self.timing.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let slower = self.timing.iter().filter(|t| t.slower()).count();
        format!(
            "against {}: {} new failures, {} fixed, {} other outcome changes, {} .code changes, \
             {} slower, {} faster, {} cases added, {} removed",
            self.baseline,
            self.new_failures.len(),
            self.fixed.len(),
            self.changed.len(),
            self.code_changes.len(),
            slower,
            self.timing.len() - slower,
            self.added.len(),
            self.removed.len()
        )
    }
}

/// A variant's label for the regression view: its outcome, or `case error`.
fn label(case: &CaseResult, v: Option<&VariantResult>) -> Option<(String, bool)> {
    if case.status != CaseStatus::Ran {
        return Some((case.status.label().into(), false));
    }
    v.map(|v| (v.outcome.label().to_lowercase(), v.outcome.is_ok()))
}

/// A variant's time: export plus runs in libtorch, in milliseconds.
pub fn variant_ms(v: &VariantResult) -> f64 {
    v.export.seconds * 1e3 + v.run_ms
}

fn notable(before: f64, after: f64) -> bool {
    let (lo, hi) = if before < after {
        (before, after)
    } else {
        (after, before)
    };
    hi - lo >= TIMING_MIN_MS && hi >= TIMING_RATIO * lo
}

/// Compare this run with a baseline.
pub fn compare(baseline_label: &str, baseline: &Results, current: &Results) -> Regression {
    let mut r = Regression {
        baseline: baseline_label.to_string(),
        baseline_started_at: baseline.started_at.clone(),
        ..Regression::default()
    };
    for old in &baseline.cases {
        if !current.cases.iter().any(|c| c.name == old.name) {
            r.removed.push(old.name.clone());
        }
    }
    for case in &current.cases {
        let Some(old) = baseline.cases.iter().find(|c| c.name == case.name) else {
            r.added.push(case.name.clone());
            continue;
        };
        if notable(old.duration_ms as f64, case.duration_ms as f64)
            && old.status == CaseStatus::Ran
            && case.status == CaseStatus::Ran
        {
            r.timing.push(Timing {
                case: case.name.clone(),
                variant: None,
                before_ms: old.duration_ms as f64,
                after_ms: case.duration_ms as f64,
            });
        }
        // Every variant either side knows about.
        let mut variants: Vec<_> = old.variants.keys().chain(case.variants.keys()).collect();
        variants.sort();
        variants.dedup();
        for variant in variants {
            let before_v = old.variants.get(variant);
            let after_v = case.variants.get(variant);
            let (Some((before, before_ok)), Some((after, after_ok))) =
                (label(old, before_v), label(case, after_v))
            else {
                continue;
            };
            let message = match (case.status, after_v) {
                (status, _) if status != CaseStatus::Ran => case
                    .error
                    .as_ref()
                    .map(|e| e.message.lines().next().unwrap_or_default().to_string())
                    .unwrap_or_default(),
                (_, Some(v)) => v.message.clone(),
                _ => String::new(),
            };
            let change = Change {
                case: case.name.clone(),
                variant: variant.to_string(),
                before: before.clone(),
                after: after.clone(),
                message,
            };
            match (before_ok, after_ok) {
                (true, false) => r.new_failures.push(change),
                (false, true) => r.fixed.push(change),
                _ if before != after => r.changed.push(change),
                _ => {}
            }
            let (Some(b), Some(a)) = (before_v, after_v) else {
                continue;
            };
            if case.status == CaseStatus::Ran && old.status == CaseStatus::Ran {
                if let (Some(bc), Some(ac)) = (&b.export.code, &a.export.code) {
                    if bc != ac {
                        r.code_changes.push(CodeChange {
                            case: case.name.clone(),
                            variant: variant.to_string(),
                            diff: TextDiff::from_lines(bc.as_str(), ac.as_str())
                                .unified_diff()
                                .context_radius(3)
                                .header("baseline", "current")
                                .to_string(),
                        });
                    }
                }
                let (bm, am) = (variant_ms(b), variant_ms(a));
                if notable(bm, am) {
                    r.timing.push(Timing {
                        case: case.name.clone(),
                        variant: Some(variant.to_string()),
                        before_ms: bm,
                        after_ms: am,
                    });
                }
            }
        }
    }
    r
}

/// The gate over a run and, when given, its regression view: the run's own exit code, raised
/// to 1 when there are new failures.
pub fn gate(results: &Results, regression: Option<&Regression>) -> u8 {
    let code = results.exit_code();
    match regression {
        Some(r) if r.fails_gate() => code.max(crate::results::exit::DIVERGED),
        _ => code,
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::case::Variant;
    use crate::results::{Outcome, SCHEMA};
    use crate::worker::ErrorBody;

    /// `(outcome, code, ms)` for traced; `None` outcome: the case errored.
    type Spec<'a> = (&'a str, Option<Outcome>, &'a str, f64);

    fn results(cases: &[Spec<'_>]) -> Results {
        Results {
            schema: SCHEMA,
            harness: "0".into(),
            torch: "2.13.0".into(),
            tch: "0.26.0".into(),
            libtorch: None,
            python: "3.11".into(),
            seed: None,
            duration_ms: 0,
            started_at: None,
            root: None,
            complete: true,
            cases: cases
                .iter()
                .map(|(name, outcome, code, ms)| {
                    let mut c = CaseResult::error(
                        name,
                        "c.yaml",
                        ErrorBody::new(crate::error::ErrorKind::Crashed, "worker exited"),
                    );
                    if let Some(o) = outcome {
                        c.status = CaseStatus::Ran;
                        c.error = None;
                        c.duration_ms = *ms as u64;
                        let mut v = VariantResult::for_test(*o);
                        v.message = format!("{o:?}");
                        v.export.code = Some(code.to_string());
                        v.run_ms = *ms;
                        c.variants.insert(Variant::named("traced").unwrap(), v);
                    }
                    c
                })
                .collect(),
        }
    }

    /// Compare `before` with `after` and check the view, one short line per entry:
    /// `new a/traced pass->fail`, `fixed ...`, `changed ...`, `code a/traced`,
    /// `slower a/traced`, `faster a`, `added a`, `removed a`.
    #[track_caller]
    fn check(before: &[Spec<'_>], after: &[Spec<'_>], expect: &[&str]) {
        let r = compare("base.json", &results(before), &results(after));
        let mut got = Vec::new();
        let line = |kind: &str, c: &Change| {
            format!("{kind} {}/{} {}->{}", c.case, c.variant, c.before, c.after)
        };
        got.extend(r.new_failures.iter().map(|c| line("new", c)));
        got.extend(r.fixed.iter().map(|c| line("fixed", c)));
        got.extend(r.changed.iter().map(|c| line("changed", c)));
        got.extend(
            r.code_changes
                .iter()
                .map(|c| format!("code {}/{}", c.case, c.variant)),
        );
        got.extend(r.timing.iter().map(|t| {
            format!(
                "{} {}{}",
                if t.slower() { "slower" } else { "faster" },
                t.case,
                t.variant
                    .as_deref()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default()
            )
        }));
        got.extend(r.added.iter().map(|c| format!("added {c}")));
        got.extend(r.removed.iter().map(|c| format!("removed {c}")));
        assert_eq!(got, expect);
        assert_eq!(r.fails_gate(), !r.new_failures.is_empty());
        assert_eq!(r.is_empty(), expect.is_empty());
    }

    use Outcome::*;

    #[test]
    fn outcomes() {
        check(
            &[("a", Some(Pass), "x", 1.0)],
            &[("a", Some(Pass), "x", 1.0)],
            &[],
        );
        check(
            &[("a", Some(Pass), "x", 1.0), ("b", Some(Fail), "x", 1.0)],
            &[("a", Some(Fail), "x", 1.0), ("b", Some(Xfail), "x", 1.0)],
            &["new a/traced pass->fail", "fixed b/traced fail->xfail"],
        );
        check(
            &[("a", Some(Xfail), "x", 1.0)],
            &[("a", Some(Xpass), "x", 1.0)],
            &["new a/traced xfail->xpass"],
        );
        check(
            &[("a", Some(Pass), "x", 1.0)],
            &[("a", Some(Xfail), "x", 1.0)],
            &["changed a/traced pass->xfail"],
        );
        check(
            &[("a", Some(Fail), "x", 1.0)],
            &[("a", Some(Error), "x", 1.0)],
            &["changed a/traced fail->error"],
        );
    }

    #[test]
    fn case_errors_and_membership() {
        check(
            &[("a", Some(Pass), "x", 1.0)],
            &[("a", None, "", 0.0)],
            &["new a/traced pass->case error"],
        );
        check(
            &[("a", None, "", 0.0)],
            &[("a", Some(Pass), "x", 1.0)],
            &["fixed a/traced case error->pass"],
        );
        // A new failing case is not a *new failure* (nothing was green before), but it is
        // listed, and the run's own gate fails on it.
        check(
            &[("a", Some(Pass), "x", 1.0)],
            &[("b", Some(Fail), "x", 1.0)],
            &["added b", "removed a"],
        );
    }

    #[test]
    fn code_changes() {
        let r = compare(
            "b",
            &results(&[("a", Some(Pass), "return x\n", 1.0)]),
            &results(&[("a", Some(Pass), "return x + 1\n", 1.0)]),
        );
        assert_eq!(r.code_changes.len(), 1);
        let diff = &r.code_changes[0].diff;
        assert!(diff.starts_with("--- baseline\n+++ current\n"), "{diff}");
        assert!(
            diff.contains("-return x\n") && diff.contains("+return x + 1\n"),
            "{diff}"
        );
        check(
            &[("a", Some(Pass), "x", 1.0)],
            &[("a", Some(Pass), "y", 1.0)],
            &["code a/traced"],
        );
    }

    #[test]
    fn timing_needs_both_ratio_and_absolute_difference() {
        // 2x but only 20 ms apart: noise.
        check(
            &[("a", Some(Pass), "x", 20.0)],
            &[("a", Some(Pass), "x", 40.0)],
            &[],
        );
        // 60 ms apart but only 1.5x: noise.
        check(
            &[("a", Some(Pass), "x", 120.0)],
            &[("a", Some(Pass), "x", 180.0)],
            &[],
        );
        // Both: the case and the variant are listed.
        check(
            &[("a", Some(Pass), "x", 100.0)],
            &[("a", Some(Pass), "x", 200.0)],
            &["slower a", "slower a/traced"],
        );
        check(
            &[("a", Some(Pass), "x", 300.0)],
            &[("a", Some(Pass), "x", 100.0)],
            &["faster a", "faster a/traced"],
        );
    }

    #[test]
    fn gate_fails_on_new_failures_only() {
        let before = results(&[("a", Some(Pass), "x", 1.0)]);
        let now = results(&[("a", Some(Xfail), "x", 1.0)]);
        let r = compare("b", &before, &now);
        assert_eq!(gate(&now, Some(&r)), 0);
        assert_eq!(gate(&now, None), 0);
        let now = results(&[("a", Some(Fail), "x", 1.0)]);
        let r = compare("b", &before, &now);
        assert_eq!(gate(&now, Some(&r)), 1);
        // A case error stays a harness error (2), the larger code.
        let now = results(&[("a", None, "", 0.0)]);
        let r = compare("b", &before, &now);
        assert!(r.fails_gate());
        assert_eq!(gate(&now, Some(&r)), 2);
    }
}
