//! Verdicts: per variant, what was observed (export, load, runs, device, re-traces) goes to
//! `diagnose`, and the findings meet the case file's expectations: pass, fail, error, xfail or
//! xpass. Pure functions over the finished [`CaseRun`].

use std::collections::BTreeMap;

use harness::case::{Case, ValueGen, Variant};
use harness::diagnose::{self, DeviceCheck, Observation, SampleFailure};
use harness::pitfall::Pitfall;
use harness::plan::{Group, SampleSpec};
use harness::results::{
    Counterexample, DimInfo, ExportInfo, Failure, GroupStat, InputInfo, Outcome, SpecInfo,
    VariantResult,
};

use super::context::{CaseRun, ProbeWait, SampleRun, Samples};
use crate::compare::MismatchKind;
use crate::materialize::describe_tensors;

/// Diagnose each of the case's variants and give its verdict (into `cx.result`).
pub fn verdicts(cx: &mut CaseRun) {
    if let Some(n) = &cx.nondeterministic {
        cx.result
            .notes
            .push(format!("eager is nondeterministic: {n}"));
    }
    let ProbeWait::Judged(device_checks) =
        std::mem::replace(&mut cx.probe, ProbeWait::Judged(BTreeMap::new()))
    else {
        unreachable!("the device probe is judged before the verdicts")
    };
    for variant in cx.case.variants.clone() {
        let vr = variant_verdict(cx, variant, &device_checks);
        cx.result.variants.insert(variant, vr);
    }
}

/// One variant's findings and verdict.
fn variant_verdict(
    cx: &mut CaseRun,
    variant: Variant,
    device_checks: &BTreeMap<Variant, diagnose::DeviceCheck>,
) -> VariantResult {
    let exported = cx.exported.as_ref().expect("exported");
    let export = &exported.exports[&variant];
    let export_error = export.error.as_ref().filter(|_| !export.ok);
    let run = cx.variants.remove(&variant).unwrap_or_default();
    let samples = cx.samples();
    let first_raise = run
        .runs
        .iter()
        .zip(&samples.specs)
        .find_map(|(r, s)| match r {
            SampleRun::Raised(m) => Some((s.id.as_str(), m.as_str())),
            _ => None,
        });
    let obs = Observation {
        variant,
        export_error,
        load_error: run.load_error.as_ref().map(|e| e.message.as_str()),
        first_raise,
        samples: failures(samples, &run.runs),
        warnings: &export.warnings,
        evidence: &exported.evidence,
        nondeterministic: cx.nondeterministic.clone(),
        device: device_checks.get(&variant),
        retrace_values: run.retraces.values.as_ref().map(|(s, r)| (s.as_str(), r)),
        retrace_shapes: run.retraces.shapes.as_ref().map(|(s, r)| (s.as_str(), r)),
    };
    let findings = diagnose::diagnose(&obs);
    let info = ExportInfo {
        ok: export.ok,
        seconds: export.seconds,
        artifact: export.path.as_ref().map(|p| p.display().to_string()),
        code: export.code.clone(),
        constants: export.constants.clone(),
        modules: export.modules.iter().cloned().map(Into::into).collect(),
        error: export_error.cloned(),
        warnings: export.warnings.iter().cloned().map(Into::into).collect(),
    };
    let facts = VariantFacts {
        export: info,
        findings,
        samples,
        runs: &run.runs,
        groups: group_stats(&samples.specs, &run.runs),
        device_check: device_checks.get(&variant).cloned(),
        counterexample: run.counterexample.clone(),
        run_ms: run.run_ms,
        not_judged: not_judged(variant, export.ok, &run),
    };
    verdict(&cx.case, variant, cx.replay.is_some(), facts)
}

/// The checks a variant could not have: the device probe's, and (for an artifact compiled for
/// one device) device portability at all, said as a warning.
fn not_judged(variant: Variant, exported: bool, run: &super::context::VariantRun) -> Vec<String> {
    let mut not_judged = run.not_judged.clone();
    if exported && !variant.def().portable {
        not_judged.push(format!(
            "device portability not judged: the {variant} artifact is compiled for the device it \
             was made on (the CPU here); compile it again on the deployment's device to check it \
             there"
        ));
    }
    not_judged
}

/// Each sample's group and how it failed (`None`: it matched), for one variant.
pub fn sample_failures(cx: &CaseRun, variant: Variant) -> Vec<(Group, Option<SampleFailure>)> {
    match cx.variants.get(&variant) {
        Some(run) => failures(cx.samples(), &run.runs),
        None => Vec::new(),
    }
}

fn failures(samples: &Samples, runs: &[SampleRun]) -> Vec<(Group, Option<SampleFailure>)> {
    samples
        .specs
        .iter()
        .zip(runs)
        .map(|(s, r)| (s.group.clone(), failure_of(r)))
        .collect()
}

/// Per sample group: samples run and diverged, the largest errors and the smallest `atol`
/// that would have passed (at the case's `rtol`).
fn group_stats(specs: &[SampleSpec], runs: &[SampleRun]) -> BTreeMap<String, GroupStat> {
    let mut stats: BTreeMap<String, GroupStat> = BTreeMap::new();
    for (spec, run) in specs.iter().zip(runs) {
        let g = stats.entry(String::from(spec.group.clone())).or_default();
        g.run += 1;
        let c = match run {
            SampleRun::Match(c) => c,
            SampleRun::Mismatch(c) => {
                g.failed += 1;
                if c.mismatches.iter().any(|m| m.kind != MismatchKind::Values) {
                    g.unmatched += 1;
                }
                c
            }
            SampleRun::Raised(_) => {
                g.failed += 1;
                g.unmatched += 1;
                continue;
            }
        };
        g.max_abs = g.max_abs.max(c.max_abs);
        g.max_rel = g.max_rel.max(c.max_rel);
        g.min_atol = g.min_atol.max(c.min_atol);
    }
    stats
}

/// The case file's inputs, dims and tolerances, for results.json.
pub fn spec_info(case: &Case) -> SpecInfo {
    let spec = &case.spec;
    SpecInfo {
        inputs: spec
            .inputs
            .iter()
            .map(|i| InputInfo {
                name: i.name.clone(),
                shape: format!(
                    "[{}]",
                    i.shape()
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                dtypes: i.dtypes().iter().map(|d| d.to_string()).collect(),
                values: match i.values() {
                    _ if i.file.is_some() => {
                        format!(
                            "file {} ({})",
                            i.file.as_deref().unwrap_or(""),
                            i.file_key()
                        )
                    }
                    _ if i.none => "None".into(),
                    ValueGen::Uniform([lo, hi]) => format!("uniform [{lo}, {hi}]"),
                    ValueGen::Normal([m, s]) => format!("normal (mean {m}, std {s})"),
                    ValueGen::Int([lo, hi]) => format!("int [{lo}, {hi}]"),
                    ValueGen::Bool(p) => format!("bool (p = {p})"),
                },
            })
            .collect(),
        dims: spec
            .dims
            .iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    DimInfo {
                        trace: d.trace,
                        min: d.min,
                        max: d.max,
                    },
                )
            })
            .collect(),
        rtol: spec.check.rtol,
        atol: spec.check.atol,
        samples: spec.check.samples,
    }
}

fn failure_of(r: &SampleRun) -> Option<SampleFailure> {
    match r {
        SampleRun::Match(_) => None,
        SampleRun::Raised(_) => Some(SampleFailure::Raised),
        SampleRun::Mismatch(c) => Some(SampleFailure::Mismatch(
            c.mismatches
                .first()
                .map(|m| m.kind)
                .unwrap_or(MismatchKind::Values),
        )),
    }
}

/// What the verdict is made from.
struct VariantFacts<'a> {
    export: ExportInfo,
    findings: Vec<diagnose::Finding>,
    samples: &'a Samples,
    runs: &'a [SampleRun],
    groups: BTreeMap<String, GroupStat>,
    device_check: Option<DeviceCheck>,
    counterexample: Option<Counterexample>,
    run_ms: f64,
    not_judged: Vec<String>,
}

/// Apply the case file's expectations to what was observed.
fn verdict(case: &Case, variant: Variant, replay: bool, facts: VariantFacts<'_>) -> VariantResult {
    let expected = case.expected(variant).to_vec();
    let mut observed: Vec<Pitfall> = Vec::new();
    for f in &facts.findings {
        if !observed.contains(&f.pitfall) {
            observed.push(f.pitfall);
        }
    }
    let samples_run = facts.runs.len();
    let samples_failed = facts
        .runs
        .iter()
        .filter(|r| !matches!(r, SampleRun::Match(_)))
        .count();
    let (max_abs, max_rel) = max_errors(facts.runs);
    let first_failure = first_failure(facts.samples, facts.runs);
    let what = describe_observation(
        &observed,
        &facts.findings,
        first_failure.as_ref(),
        samples_failed,
        samples_run,
    );
    let (outcome, message) = if replay {
        judge_replay(&expected, &observed, what)
    } else {
        judge(&expected, &observed, what, samples_run)
    };
    VariantResult {
        outcome,
        pitfalls: observed,
        expected,
        message,
        samples_run,
        samples_failed,
        first_failure,
        findings: facts.findings,
        groups: facts.groups,
        device_check: facts.device_check,
        counterexample: facts.counterexample,
        export: facts.export,
        max_abs,
        max_rel,
        run_ms: facts.run_ms,
        snapshot: None,
        code_diff: None,
        not_judged: facts.not_judged,
    }
}

/// A replay checks one saved input: it reproduces the run's verdict when it shows an expected
/// pitfall (one counterexample need not show every expected one; like the run, it may show more),
/// and says when the input no longer diverges.
fn judge_replay(expected: &[Pitfall], observed: &[Pitfall], what: String) -> (Outcome, String) {
    let ids = |p: &[Pitfall]| p.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ");
    if observed.is_empty() {
        return if expected.is_empty() {
            (Outcome::Pass, "the replayed input matches eager".into())
        } else {
            (
                Outcome::Xpass,
                format!(
                    "expected {} but the replayed input matches eager: the counterexample no \
                     longer reproduces",
                    ids(expected)
                ),
            )
        };
    }
    if observed.iter().any(|p| expected.contains(p)) {
        (Outcome::Xfail, format!("{what} (as expected)"))
    } else {
        (
            Outcome::Fail,
            format!("{} not expected: {what}", ids(observed)),
        )
    }
}

/// The outcome of observed pitfalls against expected ones, and its message.
fn judge(
    expected: &[Pitfall],
    observed: &[Pitfall],
    what: String,
    samples_run: usize,
) -> (Outcome, String) {
    let ids = |p: &[Pitfall]| p.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ");
    let hard = observed.iter().any(|p| {
        matches!(
            p,
            Pitfall::TraceError | Pitfall::ScriptCompileError | Pitfall::RuntimeError
        )
    });
    if observed.is_empty() && expected.is_empty() {
        (
            Outcome::Pass,
            format!("matches eager on {samples_run} samples"),
        )
    } else if observed.is_empty() {
        (
            Outcome::Xpass,
            format!(
                "expected {} but matches eager on {samples_run} samples: the expectation is stale",
                ids(expected)
            ),
        )
    } else if expected.is_empty() {
        (if hard { Outcome::Error } else { Outcome::Fail }, what)
    } else if expected.iter().all(|e| observed.contains(e)) {
        (Outcome::Xfail, format!("{what} (as expected)"))
    } else {
        let missing: Vec<Pitfall> = expected
            .iter()
            .filter(|e| !observed.contains(e))
            .copied()
            .collect();
        (
            if hard { Outcome::Error } else { Outcome::Fail },
            format!(
                "expected {}, observed {}; {} not seen: {what}",
                ids(expected),
                ids(observed),
                ids(&missing)
            ),
        )
    }
}

fn describe_observation(
    observed: &[Pitfall],
    findings: &[diagnose::Finding],
    first: Option<&Failure>,
    failed: usize,
    run: usize,
) -> String {
    let ids = observed
        .iter()
        .map(|p| p.id())
        .collect::<Vec<_>>()
        .join(", ");
    let at = findings
        .iter()
        .find_map(|f| f.location.as_deref())
        .map(|l| format!(" at {l}"))
        .unwrap_or_default();
    match first {
        Some(f) => format!(
            "{ids}{at}: {failed}/{run} samples diverge; first {} ({}; {}): {}{}",
            f.sample,
            f.group,
            f.inputs,
            f.path
                .as_ref()
                .map(|p| format!("{p}: "))
                .unwrap_or_default(),
            f.detail
        ),
        None => {
            let summary = findings
                .first()
                .map(|f| f.summary.clone())
                .unwrap_or_default();
            format!("{ids}{at}: {summary}")
        }
    }
}

/// The largest absolute and relative errors over the samples that compared.
fn max_errors(runs: &[SampleRun]) -> (f64, f64) {
    runs.iter()
        .filter_map(|r| match r {
            SampleRun::Match(c) | SampleRun::Mismatch(c) => Some((c.max_abs, c.max_rel)),
            SampleRun::Raised(_) => None,
        })
        .fold((0.0, 0.0), |(a, r), (x, y)| {
            (f64::max(a, x), f64::max(r, y))
        })
}

/// The first sample that diverged, described.
fn first_failure(samples: &Samples, runs: &[SampleRun]) -> Option<Failure> {
    let (i, r) = runs
        .iter()
        .enumerate()
        .find(|(_, r)| !matches!(r, SampleRun::Match(_)))?;
    let s = &samples.specs[i];
    let (kind, path, detail, c) = match r {
        SampleRun::Mismatch(c) => {
            let m = &c.mismatches[0];
            ("mismatch", Some(m.path.clone()), m.detail.clone(), Some(c))
        }
        SampleRun::Raised(e) => ("raised", None, e.clone(), None),
        SampleRun::Match(_) => unreachable!("filtered out"),
    };
    Some(Failure {
        sample: s.id.clone(),
        group: s.group.clone().into(),
        inputs: describe_tensors(&samples.inputs[i]),
        shapes: samples.inputs[i].iter().map(|(_, t)| t.size()).collect(),
        kind: kind.into(),
        path,
        detail,
        max_abs: c.map(|c| c.max_abs).unwrap_or(0.0),
        max_rel: c.map(|c| c.max_rel).unwrap_or(0.0),
    })
}
