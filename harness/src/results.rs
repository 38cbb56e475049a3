//! results.json: the versioned record of a run, and the gate's verdict over it.
//!
//! Everything a report shows is in here; reports are rendered from this, never from live state.
//! A divergence is a result (exit 1), not an error; a case the harness could not run at all is
//! a case error (exit 2).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::case::Variant;
use crate::diagnose::{DeviceCheck, Finding};
use crate::error::ErrorBody;
use crate::pitfall::Pitfall;

/// Bumped when a field changes meaning or goes away (adding fields does not bump it).
pub const SCHEMA: u32 = 1;

/// The documented exit codes.
pub mod exit {
    /// Every outcome is as the case files expect.
    pub const OK: u8 = 0;
    /// A variant diverged, failed unexpectedly, or an expectation went stale.
    pub const DIVERGED: u8 = 1;
    /// The harness could not do its job: a bad case file, a missing model, a broken environment.
    pub const HARNESS_ERROR: u8 = 2;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    pub harness: String,
    pub torch: String,
    pub tch: String,
    /// The libtorch the variants ran in, with its build tag (`2.13.0+cu130`): the torch line
    /// `harness-run` was built for. Absent when every case came from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libtorch: Option<String>,
    pub python: String,
    /// The `--seed` given on the command line; each case records the seed it used.
    pub seed: Option<u64>,
    pub duration_ms: u64,
    /// When the run started, RFC 3339 UTC (`2026-11-22T00:17:24Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The folder the run was started in (the project root): reports show paths relative to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// False when the run was cut short.
    pub complete: bool,
    pub cases: Vec<CaseResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// The harness ran the case; the variants hold the verdicts.
    Ran,
    /// The harness could not run the case (bad file, model import or constructor error, eager
    /// raising, an oversized sample, ...).
    Error,
    /// The worker process died during the case (segfault, `os._exit`, killed).
    Crashed,
    /// The case went past its time limit; the worker was killed.
    Timeout,
    /// The run was stopped (Ctrl-C, SIGTERM) during this case.
    Interrupted,
}

impl CaseStatus {
    /// How the console and the summary name a case that did not run to a verdict.
    pub fn label(self) -> &'static str {
        match self {
            CaseStatus::Ran => "ran",
            CaseStatus::Error => "case error",
            CaseStatus::Crashed => "crashed",
            CaseStatus::Timeout => "timeout",
            CaseStatus::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    pub name: String,
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub status: CaseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The device eager and the variants ran on (`cpu`, `cuda:0`); absent when the case did
    /// not get that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default)]
    pub samples: Vec<SampleInfo>,
    pub variants: BTreeMap<Variant, VariantResult>,
    /// Case-level observations (eager determinism, the device probe).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Unified diff (`--- traced` / `+++ scripted`) of the normalized `.code` of the first
    /// variant with a diff base and that base (see [`CaseResult::code_diff_pair`]): present
    /// whenever both produced code, empty when they are the same. Every variant's own diff is its
    /// [`VariantResult::code_diff`]; this one stays for older readers and the baseline view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_diff: Option<String>,
    pub duration_ms: u64,
    /// The inputs, dims and tolerances the case file declares (absent when it did not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecInfo>,
    /// The model source files the worker imported for this case (the cache is keyed by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Time spent in torch work for this case (trace, script, eager and libtorch forward passes,
    /// the device probe, re-traces, shrinking's runs), as timed where it ran, ms.
    #[serde(default)]
    pub torch_ms: f64,
    /// Time this case waited for a Python worker to start (the first case of a job), ms.
    #[serde(default)]
    pub worker_start_ms: f64,
    /// Taken from the result cache: nothing the result depends on changed since it was made.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Where `duration_ms` went, phase by phase, in order (see `timeline`): the phases add up
    /// to it, what none names is `other`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<crate::timeline::PhaseTime>,
}

/// One variant's `.code` diff against its base, as the console and the report show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairDiff<'a> {
    pub base: Variant,
    pub variant: Variant,
    /// Unified diff (`--- <base>` / `+++ <variant>`), empty when the two texts are the same.
    pub diff: &'a str,
}

/// What the case file declares about the inputs, as a report shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecInfo {
    /// forward's positional arguments, in order.
    pub inputs: Vec<InputInfo>,
    /// Each symbolic dim's trace value and range.
    #[serde(default)]
    pub dims: BTreeMap<String, DimInfo>,
    pub rtol: f64,
    pub atol: f64,
    /// Generated samples besides the trace input.
    pub samples: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    pub name: String,
    /// `[B, 4]`: sizes and dim names.
    pub shape: String,
    /// The first is the one traced.
    pub dtypes: Vec<String>,
    /// `uniform [-1, 1]`, `int [0, 255]`, ...
    pub values: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DimInfo {
    pub trace: i64,
    pub min: i64,
    pub max: i64,
}

impl CaseResult {
    /// The variants `code_diff` compares: the first of the case's variants with a diff base,
    /// and that base, both with code (as `verify` makes the diff).
    pub fn code_diff_pair(&self) -> Option<(Variant, Variant)> {
        let has_code = |v: &Variant| {
            self.variants
                .get(v)
                .is_some_and(|r| r.export.code.is_some())
        };
        self.variants
            .keys()
            .filter(|v| has_code(v))
            .find_map(|v| Some((v.diff_base().filter(has_code)?, *v)))
    }

    /// Each variant's `.code` diff against its base, in definition order; for results written
    /// before variants had their own, the case's one `code_diff` (when it has one).
    pub fn variant_diffs(&self) -> Vec<PairDiff<'_>> {
        let own: Vec<PairDiff<'_>> = self
            .variants
            .iter()
            .filter_map(|(v, r)| {
                let d = r.code_diff.as_ref()?;
                Some(PairDiff {
                    base: d.diff_base,
                    variant: *v,
                    diff: &d.diff,
                })
            })
            .collect();
        if !own.is_empty() {
            return own;
        }
        let pair = self.code_diff_pair();
        let old = self.code_diff.as_deref().zip(pair);
        old.map(|(diff, (base, variant))| PairDiff {
            base,
            variant,
            diff,
        })
        .into_iter()
        .collect()
    }

    /// A case the harness could not run.
    pub fn error(name: &str, file: &str, error: ErrorBody) -> CaseResult {
        CaseResult {
            status: CaseStatus::Error,
            error: Some(error),
            ..CaseResult::ran(name, file)
        }
    }

    /// A case that runs, before anything is known of it.
    pub fn ran(name: &str, file: &str) -> CaseResult {
        CaseResult {
            name: name.into(),
            file: file.into(),
            description: None,
            status: CaseStatus::Ran,
            error: None,
            model: None,
            seed: None,
            device: None,
            samples: Vec::new(),
            variants: BTreeMap::new(),
            notes: Vec::new(),
            code_diff: None,
            duration_ms: 0,
            spec: None,
            sources: Vec::new(),
            torch_ms: 0.0,
            worker_start_ms: 0.0,
            cached: false,
            timeline: Vec::new(),
        }
    }
}

/// One submodule's TorchScript code, as results.json keeps it (the worker's own type is
/// `protocol::ModuleCode`: a protocol change does not change this schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleCode {
    pub name: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constants: BTreeMap<String, String>,
}

impl From<crate::protocol::ModuleCode> for ModuleCode {
    fn from(m: crate::protocol::ModuleCode) -> Self {
        ModuleCode {
            name: m.name,
            code: m.code,
            constants: m.constants,
        }
    }
}

/// A warning raised while exporting, at the user's file and line, as results.json keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceWarning {
    pub category: String,
    pub message: String,
    pub file: String,
    pub line: u32,
    pub source_line: String,
    pub count: u32,
}

impl From<crate::protocol::TraceWarning> for TraceWarning {
    fn from(w: crate::protocol::TraceWarning) -> Self {
        TraceWarning {
            category: w.category,
            message: w.message,
            file: w.file,
            line: w.line,
            source_line: w.source_line,
            count: w.count,
        }
    }
}

#[cfg(test)]
impl CaseResult {
    /// For tests: a case that ran, with no variants yet.
    pub(crate) fn ran_for_test(name: &str) -> CaseResult {
        CaseResult::ran(name, &format!("{name}.yaml"))
    }
}

#[cfg(test)]
impl VariantResult {
    /// For tests: a variant with this outcome, one sample run, an exported artifact and no
    /// findings; tests set the fields they look at.
    pub(crate) fn for_test(outcome: Outcome) -> VariantResult {
        VariantResult {
            outcome,
            pitfalls: vec![],
            expected: vec![],
            message: String::new(),
            samples_run: 1,
            samples_failed: 0,
            first_failure: None,
            findings: vec![],
            groups: BTreeMap::new(),
            device_check: None,
            counterexample: None,
            snapshot: None,
            code_diff: None,
            not_judged: vec![],
            export: ExportInfo {
                ok: true,
                seconds: 0.0,
                artifact: None,
                code: None,
                constants: BTreeMap::new(),
                modules: vec![],
                error: None,
                warnings: vec![],
            },
            max_abs: 0.0,
            max_rel: 0.0,
            run_ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `path/to/model.py` or the module name.
    pub origin: String,
    pub entry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleInfo {
    pub id: String,
    pub group: String,
    /// `x: 3x4 float32, h: 3x4 float32`
    pub inputs: String,
    pub eager_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Matches eager on every sample, as expected.
    Pass,
    /// Diverged from eager, unexpectedly.
    Fail,
    /// Could not be exported, or raised where eager did not, unexpectedly.
    Error,
    /// Diverged or failed as the case file documents.
    Xfail,
    /// The case file expects a pitfall that was not observed: a stale expectation.
    Xpass,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Error => "ERROR",
            Outcome::Xfail => "XFAIL",
            Outcome::Xpass => "XPASS",
        }
    }

    /// Does this outcome keep the gate green?
    pub fn is_ok(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Xfail)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantResult {
    pub outcome: Outcome,
    /// The pitfalls observed.
    pub pitfalls: Vec<Pitfall>,
    /// The pitfalls the case file expects.
    pub expected: Vec<Pitfall>,
    /// One line: why this outcome.
    pub message: String,
    pub samples_run: usize,
    pub samples_failed: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<Failure>,
    /// Why: one finding per pitfall, with evidence and a fix hint.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Per sample group: samples run and samples that diverged.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupStat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_check: Option<DeviceCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterexample: Option<Counterexample>,
    pub export: ExportInfo,
    #[serde(with = "nonfinite")]
    pub max_abs: f64,
    #[serde(with = "nonfinite")]
    pub max_rel: f64,
    pub run_ms: f64,
    /// The variant's `.code` against its stored snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// The variant's normalized `.code` against its diff base's, when the case runs that base and
    /// both produced code (absent in results written before it was kept per variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_diff: Option<CodeDiff>,
    /// Checks that could not run for this variant, and what they leave open (a device pin in its
    /// graph that no probe could judge): shown as warnings, never a silent pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_judged: Vec<String>,
}

/// A variant's normalized `.code` against its stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub state: SnapshotState,
    /// The `.snap` file (a pending change is next to it, as `.snap.new`).
    pub path: String,
    /// Unified diff (`--- stored` / `+++ new`) when the code changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// A variant's normalized `.code` against that of its diff base (`Definition::diff_base`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeDiff {
    /// The variant it is diffed against.
    pub diff_base: Variant,
    /// Unified diff (`--- <diff_base>` / `+++ <variant>`), empty when the two texts are the same.
    pub diff: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotState {
    /// The stored snapshot equals the new code.
    Matched,
    /// No stored snapshot: to review (fails the gate).
    New,
    /// The code differs from the stored snapshot: to review (fails the gate).
    Changed,
    /// Written by `--accept`.
    Accepted,
    /// The variant produced no code (its export failed).
    Skipped,
}

impl SnapshotState {
    /// Does this state need a person's review (and fail the gate)?
    pub fn needs_review(self) -> bool {
        matches!(self, SnapshotState::New | SnapshotState::Changed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub ok: bool,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The constants `code` names (`CONSTANTS.c0`): their values are not in `code` itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constants: BTreeMap<String, String>,
    /// Each submodule's code: `code` only calls them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<ModuleCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub warnings: Vec<TraceWarning>,
}

/// The first sample on which a variant diverged or raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub sample: String,
    pub group: String,
    pub inputs: String,
    pub shapes: Vec<Vec<i64>>,
    /// `mismatch` or `raised`.
    pub kind: String,
    /// The output path that differs (`output[0]`), for mismatches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub detail: String,
    #[serde(with = "nonfinite")]
    pub max_abs: f64,
    #[serde(with = "nonfinite")]
    pub max_rel: f64,
}

/// One sample group of one variant: how many samples ran and diverged, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupStat {
    pub run: usize,
    pub failed: usize,
    /// Samples that no tolerance can pass: they raised, or the output's structure, shape,
    /// dtype or device differs.
    #[serde(default)]
    pub unmatched: usize,
    /// The largest errors over the group's comparable outputs.
    #[serde(default, with = "nonfinite")]
    pub max_abs: f64,
    #[serde(default, with = "nonfinite")]
    pub max_rel: f64,
    /// The smallest `atol` that would have passed every comparable output at the case's `rtol`.
    #[serde(default, with = "nonfinite")]
    pub min_atol: f64,
}

/// The smallest input found that still diverges, saved for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counterexample {
    /// The sample it was shrunk from.
    pub from_sample: String,
    pub inputs: String,
    pub shapes: Vec<Vec<i64>>,
    pub dims: BTreeMap<String, i64>,
    /// Float values rounded to this many decimals (absent: full precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<u8>,
    /// `mismatch` or `raised`.
    pub kind: String,
    pub detail: String,
    #[serde(with = "nonfinite")]
    pub max_abs: f64,
    #[serde(with = "nonfinite")]
    pub max_rel: f64,
    /// The safetensors file holding the inputs, by name.
    pub file: String,
    /// One command that replays just this case and this input.
    pub replay: String,
    /// Candidates tried while shrinking (one worker round trip each).
    pub round_trips: usize,
}

/// JSON has no infinity or NaN: errors that are not finite are written as "inf", "-inf", "nan".
mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_str(&x.to_string().to_lowercase())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            F(f64),
            S(String),
        }
        match Num::deserialize(d)? {
            Num::F(x) => Ok(x),
            Num::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Results {
    /// The gate: 2 if any case could not be run, else 1 if any verdict is not as expected or
    /// any snapshot is new or changed (a change to review).
    pub fn exit_code(&self) -> u8 {
        if !self.complete || self.cases.iter().any(|c| c.status != CaseStatus::Ran) {
            return exit::HARNESS_ERROR;
        }
        let all_ok = self
            .cases
            .iter()
            .flat_map(|c| c.variants.values())
            .all(|v| {
                v.outcome.is_ok() && !v.snapshot.as_ref().is_some_and(|s| s.state.needs_review())
            });
        if all_ok {
            exit::OK
        } else {
            exit::DIVERGED
        }
    }

    /// Snapshots by state (`new`, `changed`, ...), for the summary.
    pub fn snapshot_counts(&self) -> BTreeMap<SnapshotState, usize> {
        let mut counts = BTreeMap::new();
        for s in self
            .cases
            .iter()
            .flat_map(|c| c.variants.values())
            .filter_map(|v| v.snapshot.as_ref())
        {
            *counts.entry(s.state).or_default() += 1;
        }
        counts
    }

    /// Counts by outcome, with `case error` for cases that did not run.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for c in &self.cases {
            if c.status != CaseStatus::Ran {
                *counts.entry(c.status.label()).or_default() += 1;
            }
            for v in c.variants.values() {
                *counts.entry(v.outcome.label()).or_default() += 1;
            }
        }
        counts
    }

    /// Write atomically: a temporary file in the same folder, then a rename.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        std::io::Write::write_all(&mut tmp, b"\n")?;
        tmp.persist(path)?;
        Ok(())
    }

    pub fn read(path: &Path) -> anyhow::Result<Results> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(outcome: Outcome, max_abs: f64) -> VariantResult {
        VariantResult {
            max_abs,
            ..VariantResult::for_test(outcome)
        }
    }

    fn results(cases: Vec<CaseResult>) -> Results {
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
            cases,
        }
    }

    fn case(outcomes: &[Outcome]) -> CaseResult {
        let mut c = CaseResult::ran_for_test("c");
        for (o, v) in outcomes.iter().zip(Variant::all()) {
            c.variants.insert(v, variant(*o, f64::INFINITY));
        }
        c
    }

    /// The gate's exit code for cases with these variant outcomes (`None`: a case error).
    #[track_caller]
    fn check(cases: &[Option<&[Outcome]>], expect: u8) {
        let cases = cases
            .iter()
            .map(|c| match c {
                Some(o) => case(o),
                None => CaseResult::error(
                    "bad",
                    "bad.yaml",
                    ErrorBody::new(crate::error::ErrorKind::CaseFile, "m"),
                ),
            })
            .collect();
        assert_eq!(results(cases).exit_code(), expect);
    }

    #[test]
    fn gate() {
        use Outcome::*;
        check(&[Some(&[Pass, Pass]), Some(&[Xfail, Pass])], exit::OK);
        check(&[Some(&[Pass, Fail])], exit::DIVERGED);
        check(&[Some(&[Xpass])], exit::DIVERGED);
        check(&[Some(&[Error])], exit::DIVERGED);
        check(&[Some(&[Fail]), None], exit::HARNESS_ERROR);
        check(&[], exit::OK);
    }

    /// A snapshot to review fails the gate like a divergence; a case error still wins.
    #[test]
    fn gate_with_snapshots() {
        use SnapshotState::*;
        let code = |states: &[SnapshotState], error: bool| {
            let mut c = case(&[Outcome::Pass, Outcome::Xfail]);
            for (v, s) in c.variants.values_mut().zip(states) {
                v.snapshot = Some(SnapshotInfo {
                    state: *s,
                    path: "p".into(),
                    diff: None,
                });
            }
            let mut cases = vec![c];
            if error {
                cases.push(CaseResult::error(
                    "bad",
                    "bad.yaml",
                    cases[0]
                        .clone()
                        .error
                        .unwrap_or(ErrorBody::new(crate::error::ErrorKind::Internal, "m")),
                ));
            }
            results(cases).exit_code()
        };
        assert_eq!(code(&[Matched, Accepted], false), exit::OK);
        assert_eq!(code(&[Skipped, Matched], false), exit::OK);
        assert_eq!(code(&[New, Matched], false), exit::DIVERGED);
        assert_eq!(code(&[Matched, Changed], false), exit::DIVERGED);
        assert_eq!(code(&[Changed, Changed], true), exit::HARNESS_ERROR);
        let text = serde_json::to_string(&SnapshotInfo {
            state: Changed,
            path: "s.snap".into(),
            diff: Some("d".into()),
        })
        .unwrap();
        assert_eq!(text, r#"{"state":"changed","path":"s.snap","diff":"d"}"#);
    }

    /// A results file written before variants kept their own `.code` diff loads, and its
    /// case-level diff stands for the pair it names.
    #[test]
    fn results_without_variant_diffs_still_load() {
        let old_variant = r#"{"outcome": "fail", "pitfalls": [], "expected": [], "message": "m",
            "samples_run": 1, "samples_failed": 1, "max_abs": 1.0, "max_rel": 1.0, "run_ms": 0.0,
            "export": {"ok": true, "seconds": 0.0, "code": "def forward"}}"#;
        let text = format!(
            r#"{{"schema": 1, "harness": "0", "torch": "t", "tch": "t", "python": "p",
                "seed": null, "duration_ms": 0, "complete": true,
                "cases": [{{"name": "c", "file": "c.yaml", "status": "ran", "duration_ms": 0,
                  "code_diff": "--- traced\n+++ scripted\n",
                  "variants": {{"traced": {old_variant}, "scripted": {old_variant}}}}}]}}"#
        );
        let old: Results = serde_json::from_str(&text).unwrap();
        let c = &old.cases[0];
        assert!(c.variants.values().all(|v| v.code_diff.is_none()));
        let [traced, scripted, frozen] =
            ["traced", "scripted", "frozen"].map(|n| Variant::named(n).unwrap());
        let pair = |base, variant, diff| PairDiff {
            base,
            variant,
            diff,
        };
        let legacy = "--- traced\n+++ scripted\n";
        assert_eq!(c.variant_diffs(), [pair(traced, scripted, legacy)]);
        // A variant's own diff is one more key, and wins over the case's.
        let mut new = c.clone();
        new.variants.insert(frozen, variant(Outcome::Pass, 0.0));
        new.variants.get_mut(&frozen).unwrap().code_diff = Some(CodeDiff {
            diff_base: scripted,
            diff: "d".into(),
        });
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(
            json["variants"]["frozen"]["code_diff"],
            serde_json::json!({"diff_base": "scripted", "diff": "d"})
        );
        assert!(json["variants"]["traced"].get("code_diff").is_none());
        assert_eq!(new.variant_diffs(), [pair(scripted, frozen, "d")]);
    }

    #[test]
    fn json_round_trip_keeps_infinite_errors() {
        let r = results(vec![case(&[Outcome::Fail, Outcome::Pass])]);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"max_abs\":\"inf\""), "{text}");
        let back: Results = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/results.json");
        r.write(&path).unwrap();
        assert_eq!(Results::read(&path).unwrap(), r);
    }
}
