//! JUnit XML (`junit.xml`) for CI test tabs, made with `quick-junit` from results.json.
//!
//! One `<testsuite>` per case, one `<testcase>` per variant (`classname` the case, `name` the
//! variant). `pass` is a success; `xfail` is reported as skipped with the documented pitfalls as
//! its message (pytest's convention for expected failures); `fail` and `xpass` are failures and
//! `error` an error, each carrying the verdict as the message and the findings (pitfall,
//! location, summary, evidence, fix hint), the minimal input and the replay command as the text.
//! A case the harness could not run is one errored `<testcase name="case">` with the error and
//! its traceback.

use std::fmt::Write as _;
use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::results::{CaseStatus, Outcome, Results, VariantResult};

/// The findings and the counterexample of one variant, as plain text.
pub fn failure_text(v: &VariantResult) -> String {
    let mut t = String::new();
    for f in &v.findings {
        let at = f
            .location
            .as_deref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default();
        let _ = writeln!(t, "{}{at}: {}", f.pitfall, f.summary);
        for e in &f.evidence {
            let _ = writeln!(t, "  - {e}");
        }
        let _ = writeln!(t, "  fix: {}", f.hint);
    }
    if let Some(cx) = &v.counterexample {
        let _ = writeln!(
            t,
            "minimal input: {} (shrunk from {}): {}",
            cx.inputs, cx.from_sample, cx.detail
        );
        let _ = writeln!(t, "replay: {}", cx.replay);
    }
    if t.is_empty() {
        t = v.message.clone();
    }
    t
}

pub fn render(results: &Results) -> anyhow::Result<String> {
    let mut report = Report::new("trace-vs-script");
    report.set_time(Duration::from_millis(results.duration_ms));
    for case in &results.cases {
        let mut suite = TestSuite::new(case.name.as_str());
        suite.add_property(("file", case.file.as_str()));
        suite.add_property(("torch", results.torch.as_str()));
        suite.add_property(("tch", results.tch.as_str()));
        if let Some(libtorch) = &results.libtorch {
            suite.add_property(("libtorch", libtorch.as_str()));
        }
        if let Some(device) = &case.device {
            suite.add_property(("device", device.as_str()));
        }
        if let Some(seed) = case.seed {
            suite.add_property(("seed", seed.to_string().as_str()));
        }
        suite.set_time(Duration::from_millis(case.duration_ms));
        if case.status != CaseStatus::Ran {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            if let Some(e) = &case.error {
                status
                    .set_type(e.kind.as_str())
                    .set_message(e.message.lines().next().unwrap_or_default())
                    .set_description(format!("{}\n{}", e.message, e.traceback.join("\n")));
            }
            let mut tc = TestCase::new("case", status);
            tc.set_classname(case.name.as_str());
            suite.add_test_case(tc);
        }
        for (variant, v) in &case.variants {
            let ids = |p: &[crate::pitfall::Pitfall]| {
                p.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ")
            };
            let status = match v.outcome {
                Outcome::Pass => TestCaseStatus::success(),
                Outcome::Xfail => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_type("xfail")
                        .set_message(format!("expected failure: {}", ids(&v.expected)))
                        .set_description(failure_text(v));
                    s
                }
                Outcome::Fail | Outcome::Xpass | Outcome::Error => {
                    let kind = if v.outcome == Outcome::Error {
                        NonSuccessKind::Error
                    } else {
                        NonSuccessKind::Failure
                    };
                    let mut s = TestCaseStatus::non_success(kind);
                    s.set_type(v.outcome.label().to_lowercase())
                        .set_message(v.message.as_str())
                        .set_description(failure_text(v));
                    s
                }
            };
            let mut tc = TestCase::new(variant.as_str(), status);
            tc.set_classname(case.name.as_str())
                .set_time(Duration::from_secs_f64(
                    (v.export.seconds + v.run_ms / 1e3).max(0.0),
                ));
            suite.add_test_case(tc);
        }
        report.add_test_suite(suite);
    }
    Ok(report.to_string()?)
}
