//! Running a case: plan → worker (load, trace, script, eager) → libtorch (variants) → compare →
//! diagnose → shrink.
//!
//! The eager reference runs in the Python worker; the traced and scripted artifacts it saved run
//! here, in libtorch through `tch`, as they would in a C++ deployment. Each variant's per-sample
//! results, the eager determinism check, the device probe and re-traces feed the diagnosis; a
//! divergent variant's first failing sample is shrunk to a minimal counterexample, saved for
//! replay. A model or case the harness cannot run becomes a case error; a divergence is a
//! verdict, never an error. The meta device probe runs in the probe service (see `probe`): a
//! case whose every other step is done while its probe still runs is parked by
//! [`Runner::start_case`] and completed by [`Runner::finish_case`], so the job can go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{CModule, Device, IValue, Tensor};

use harness::case::{Case, DeviceProbe, ModelOrigin, ValueGen, Variant};
use crate::compare::{compare, Comparison, MismatchKind, Tolerance, Tolerances};
use harness::diagnose::{self, DeviceCheck, Observation, SampleFailure};
use harness::diagnose::error_summary;
use harness::options::{Options, DEFAULT_CASE_TIMEOUT, DEFAULT_MAX_ELEMENTS};
use harness::pitfall::Pitfall;
use harness::plan::{self, Group, SampleSpec};
use harness::probe::{self, ProbeService};
use harness::results::{
    CaseResult, CaseStatus, Counterexample, DimInfo, ExportInfo, Failure, GroupStat, InputInfo,
    ModelInfo, Outcome, SampleInfo, SpecInfo, VariantResult,
};
use crate::materialize::{describe_tensors, materialize};
use crate::shrink;
use crate::tensors;
use crate::value::Value;
use harness::worker::{
    ErrorBody, Export, ExportReply, LoadRequest, ProbeRun, Retrace, SampleRef, Worker, WorkerError,
};

/// Candidates tried when shrinking one variant's counterexample (one worker round trip each).
pub const MAX_SHRINK_ROUND_TRIPS: usize = 48;

/// The device probe of a case, once its variants have run.
enum ProbeWait {
    /// Judged already (CUDA, in the case's child; or nothing to probe, or no probe possible).
    Judged(BTreeMap<Variant, DeviceCheck>),
    /// On meta, in the probe service: its outcome comes on the channel (kept once taken).
    Meta(Receiver<probe::Outcome>, Option<probe::Outcome>),
}

impl ProbeWait {
    /// Has the outcome arrived (without waiting)?
    fn ready(&mut self) -> bool {
        match self {
            ProbeWait::Judged(_) | ProbeWait::Meta(_, Some(_)) => true,
            ProbeWait::Meta(rx, got) => match rx.try_recv() {
                Ok(o) => {
                    *got = Some(o);
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => {
                    *got = Some(Err(probe::Failure::Failed(
                        "the probe service stopped".into(),
                    )));
                    true
                }
            },
        }
    }
}

/// What is left of a case once its child is done: the device probe's outcome, diagnosis and
/// verdicts.
struct Rest {
    exported: ExportReply,
    samples: Samples,
    modules: BTreeMap<Variant, CModule>,
    runs: BTreeMap<Variant, Vec<SampleRun>>,
    load_errors: BTreeMap<Variant, ErrorBody>,
    run_ms: BTreeMap<Variant, f64>,
    nondeterministic: Option<String>,
    /// Per variant: re-traces on a failing value sample and shape sample (traced only).
    retraces: BTreeMap<Variant, Retraces>,
    counterexamples: BTreeMap<Variant, Counterexample>,
    probe: ProbeWait,
}

type Retraces = (Option<(String, Retrace)>, Option<(String, Retrace)>);

/// A case whose device probe was still running when all its other work was done. The job runs
/// the next case meanwhile and finishes this one with [`Runner::finish_case`].
pub struct Parked {
    case: Case,
    result: CaseResult,
    rest: Rest,
    limit: Duration,
    /// The case's own time so far (not the time it was set aside).
    ran: Duration,
    /// What is left of its time limit.
    left: Duration,
    torch_ms: f64,
    start_ms: f64,
}

impl Parked {
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// Has its probe answered, so that finishing it will not wait?
    pub fn ready(&mut self) -> bool {
        self.rest.probe.ready()
    }
}

/// The device probe as it stands once the case's variants have run.
enum Probe {
    /// On CUDA: eager runs in the case's child (request id).
    Cuda(u64),
    /// On meta, in the probe service.
    Meta(Receiver<probe::Outcome>),
    /// Nothing to run (no graph names a device): judged already.
    Judged(BTreeMap<Variant, DeviceCheck>),
}

/// A case after [`Runner::start_case`].
// Moved once per case: the size of a result does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    Done(CaseResult),
    Parked(Box<Parked>),
}

/// Runs cases one after another with one persistent worker, restarted after a crash.
pub struct Runner {
    opts: Options,
    worker: Option<Worker>,
    probe: Arc<ProbeService>,
    /// When the current case must be done.
    deadline: Instant,
    /// The current case's torch work so far (trace, script, forward passes), ms.
    torch_ms: f64,
    /// The current case's wait for a worker to start, ms.
    start_ms: f64,

    work: tempfile::TempDir,
    pub torch: String,
    pub python: String,
}

/// One case's inputs and eager outputs, as they are built up.
struct Samples {
    specs: Vec<SampleSpec>,
    inputs: Vec<Vec<(String, Tensor)>>,
    files: Vec<SampleRef>,
    expected: Vec<Value>,
}

/// How one sample went for one variant.
enum SampleRun {
    Match(Comparison),
    Mismatch(Comparison),
    Raised(String),
}

impl Runner {
    /// A runner sharing the run's probe service with the other jobs; its worker starts with the
    /// first case that needs it (a run whose every case comes from the cache starts no Python).
    pub fn with_probe_service(
        opts: Options,
        probe: Arc<ProbeService>,
    ) -> Result<Runner, WorkerError> {
        let work = tempfile::Builder::new()
            .prefix("harness-run-")
            .tempdir()
            .map_err(|e| WorkerError::Protocol(format!("cannot make a work folder: {e}")))?;
        Ok(Runner {
            torch: String::new(),
            python: String::new(),
            opts,
            deadline: Instant::now(),
            torch_ms: 0.0,
            start_ms: 0.0,

            worker: None,
            probe,
            work,
        })
    }

    fn worker(&mut self) -> Result<&mut Worker, WorkerError> {
        if self.worker.is_none() {
            let t = Instant::now();
            let w = Worker::spawn(&self.opts.python, self.opts.torch_threads)?;
            self.start_ms += t.elapsed().as_secs_f64() * 1e3;
            self.torch = w.hello.torch.clone();
            self.python = w.hello.python.clone();
            self.worker = Some(w);
        }
        Ok(self.worker.as_mut().expect("just spawned"))
    }

    /// Run one case to a result; never panics on what a model does.
    pub fn run_case(&mut self, case: &Case) -> CaseResult {
        match self.start_case(case) {
            Step::Done(result) => result,
            Step::Parked(parked) => self.finish_case(*parked),
        }
    }

    /// Run a case up to its verdicts; if only its device probe (in the probe service) is still
    /// running by then, set it aside: [`Runner::finish_case`] completes it later.
    pub fn start_case(&mut self, case: &Case) -> Step {
        let start = Instant::now();
        let limit = self.opts.timeout.unwrap_or_else(|| {
            case.spec
                .check
                .timeout_s
                .map(Duration::from_secs_f64)
                .unwrap_or(DEFAULT_CASE_TIMEOUT)
        });
        self.deadline = start + limit;
        self.torch_ms = 0.0;
        self.start_ms = 0.0;
        let seed = self.opts.seed.unwrap_or(case.spec.check.seed);
        let mut result = CaseResult {
            name: case.name.clone(),
            file: case.file.display().to_string(),
            description: case.spec.description.clone(),
            status: CaseStatus::Ran,
            error: None,
            model: Some(ModelInfo {
                origin: match &case.origin {
                    ModelOrigin::Source(_) => case.spec.model.source.clone().unwrap_or_default(),
                    ModelOrigin::Import(m) => m.clone(),
                },
                entry: case.spec.model.entry.clone(),
                class: None,
            }),
            seed: Some(seed),
            samples: Vec::new(),
            variants: Default::default(),
            notes: Vec::new(),
            code_diff: None,
            duration_ms: 0,
            spec: Some(spec_info(case)),
            sources: Vec::new(),
            torch_ms: 0.0,
            worker_start_ms: 0.0,
            cached: false,
        };
        let inner = self.run_inner(case, seed, &mut result);
        // The case's child is done either way; the fork server is idle until the next case.
        if let Some(w) = self.worker.as_mut() {
            if w.end_case().is_err() {
                self.worker = None;
            }
        }
        let rest = match inner {
            Ok(rest) => rest,
            Err(error) => {
                let result = self.failed(case, limit, result, error);
                return Step::Done(self.done(case, result, start.elapsed()));
            }
        };
        let mut parked = Parked {
            case: case.clone(),
            result,
            rest,
            limit,
            ran: start.elapsed(),
            left: self.deadline.saturating_duration_since(Instant::now()),
            torch_ms: self.torch_ms,
            start_ms: self.start_ms,
        };
        if parked.ready() {
            Step::Done(self.finish_case(parked))
        } else {
            Step::Parked(Box::new(parked))
        }
    }

    /// Complete a case [`Runner::start_case`] set aside (waiting for its probe if need be).
    pub fn finish_case(&mut self, parked: Parked) -> CaseResult {
        let start = Instant::now();
        let Parked {
            case,
            mut result,
            rest,
            limit,
            ran,
            left,
            torch_ms,
            start_ms,
        } = parked;
        self.deadline = start + left;
        self.torch_ms = torch_ms;
        self.start_ms = start_ms;
        if let Err(error) = self.finish_inner(&case, rest, &mut result) {
            result = self.failed(&case, limit, result, error);
        }
        self.done(&case, result, ran + start.elapsed())
    }

    /// A case that stopped with an error: its status, and nothing half-done kept.
    fn failed(
        &self,
        case: &Case,
        limit: Duration,
        mut result: CaseResult,
        mut error: ErrorBody,
    ) -> CaseResult {
        result.status = match error.kind.as_str() {
            "crashed" => CaseStatus::Crashed,
            "timeout" => CaseStatus::Timeout,
            "interrupted" => CaseStatus::Interrupted,
            _ => CaseStatus::Error,
        };
        if result.status == CaseStatus::Timeout {
            error.message = format!(
                "the case took longer than its limit of {:.0} s (check.timeout_s or --timeout); \
                 the worker was killed ({})",
                limit.as_secs_f64(),
                error.message
            );
        }
        if result.status == CaseStatus::Interrupted {
            // Nothing from a case cut short may be mistaken for a finished one's output.
            let _ = std::fs::remove_dir_all(self.opts.out_dir.join("artifacts").join(&case.name));
        }
        result.error = Some(error);
        result.variants.clear();
        result
    }

    /// The case's own time and torch work, and its samples' files gone.
    fn done(&self, case: &Case, mut result: CaseResult, took: Duration) -> CaseResult {
        let _ = std::fs::remove_dir_all(self.work.path().join(&case.name));
        result.duration_ms = took.as_millis() as u64;
        result.torch_ms = self.torch_ms;
        result.worker_start_ms = self.start_ms;
        result
    }

    fn run_inner(
        &mut self,
        case: &Case,
        seed: u64,
        result: &mut CaseResult,
    ) -> Result<Rest, ErrorBody> {
        if let Some(w) = &self.worker {
            w.clear_stderr_tail();
        }
        if self.opts.replay.is_none() && !tch::Cuda::is_available() {
            self.fork_probe_server_if_wanted();
        }
        // Each case runs in a fresh child of the warm fork server: nothing from earlier cases.
        self.call(|w, timeout| w.begin_case(timeout))?;
        let names = case.wire_names();
        let sample_dir = self.work.path().join(&case.name);
        let artifact_dir = self.opts.out_dir.join("artifacts").join(&case.name);
        for dir in [&sample_dir, &artifact_dir] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)
                .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{}: {e}", dir.display())))?;
        }

        // 1. The model, in the worker.
        let (source, import) = match &case.origin {
            ModelOrigin::Source(p) => (Some(p.as_path()), None),
            ModelOrigin::Import(m) => (None, Some(m.as_str())),
        };
        let req = LoadRequest {
            case: &case.name,
            source,
            import,
            entry: &case.spec.model.entry,
            kwargs: &case.spec.model.kwargs,
            eval: case.spec.model.eval,
            seed,
        };
        let loaded = self.call(|w, timeout| w.load(&req, timeout))?;
        if let Some(m) = result.model.as_mut() {
            m.class = Some(loaded.class);
        }
        result.sources = loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();

        // 2. Inputs: the plan (or the trace input and a replayed file), made once, written for
        //    the worker, kept for libtorch.
        let mut specs = plan::plan(case, seed);
        let budget = self
            .opts
            .max_elements
            .or(case.spec.check.max_elements)
            .unwrap_or(DEFAULT_MAX_ELEMENTS);
        for s in &specs {
            let n = plan::elements(case, s);
            if n > u128::from(budget) {
                return Err(ErrorBody::new(ErrorKind::TooLarge,
                    format!(
                        "sample {} ({}; dims {}) would hold {n} elements, above the budget of \
                         {budget} per sample (raise check.max_elements or --max-elements, or \
                         lower the dims' max)",
                        s.id,
                        String::from(s.group.clone()),
                        s.dims
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                ));
            }
        }
        let mut inputs: Vec<Vec<(String, Tensor)>> = Vec::with_capacity(specs.len());
        if let Some(file) = &self.opts.replay {
            specs.truncate(1);
            let mut replay = specs[0].clone();
            replay.id = "replay".into();
            replay.group = Group::Replay;
            specs.push(replay);
            inputs.push(materialize(case, &specs[0]));
            inputs.push(read_replay(file, &names)?);
        } else {
            inputs.extend(specs.iter().map(|s| materialize(case, s)));
        }
        // One file for every sample (`s3/x`): a file per sample cost more in system calls than
        // the tensors in it.
        let batch = write_samples(
            &sample_dir.join("samples.safetensors"),
            specs
                .iter()
                .map(|s| s.id.as_str())
                .zip(inputs.iter().map(Vec::as_slice)),
        )?;
        let files: Vec<SampleRef> = specs
            .iter()
            .map(|s| SampleRef {
                file: batch.clone(),
                sample: s.id.clone(),
            })
            .collect();

        // 3. Trace and script on the trace input (sample 0).
        let variants: Vec<&str> = case.spec.variants.iter().map(|v| v.as_str()).collect();
        let trace_dims = specs[0].dims.clone();
        let exported = self.call(|w, timeout| {
            w.export(
                &case.name,
                &files[0],
                &names,
                &variants,
                &trace_dims,
                &artifact_dir,
                timeout,
            )
        })?;
        self.torch_ms += [&exported.traced, &exported.scripted]
            .iter()
            .filter_map(|e| e.as_ref().map(|e| e.seconds * 1e3))
            .sum::<f64>();
        if exported.eager_state_changed {
            return Err(ErrorBody::new(ErrorKind::EagerStateChanged,
                "tracing or scripting changed the eager model's parameters or buffers",
            ));
        }

        // 4. Eager on every sample, and a second time on the first two (determinism).
        let mut requests: Vec<(String, SampleRef)> = files
            .iter()
            .map(|f| (f.sample.clone(), f.clone()))
            .collect();
        let repeats: Vec<usize> = (0..files.len().min(2)).collect();
        for &i in &repeats {
            requests.push((format!("{}#again", files[i].sample), files[i].clone()));
        }
        let (mut outputs, eager_s): (Vec<Value>, Vec<f64>) = self
            .eager(case, &specs, &inputs, &requests, &sample_dir)?
            .into_iter()
            .unzip();
        let again = outputs.split_off(files.len());
        let tol = Tolerances::from_check(&case.spec.check);
        let tol = &tol;
        let wire = case.wire_names();
        let mut nondeterministic = None;
        for (&i, second) in repeats.iter().zip(&again) {
            let c = compare(&outputs[i], second, tol);
            if let Some(m) = c.mismatches.first() {
                nondeterministic = Some(format!(
                    "two eager runs on {} ({}) differ at {}: {}",
                    specs[i].id,
                    describe_tensors(&inputs[i]),
                    m.path,
                    m.detail
                ));
                break;
            }
        }
        for (i, s) in specs.iter().enumerate() {
            result.samples.push(SampleInfo {
                id: s.id.clone(),
                group: s.group.clone().into(),
                inputs: describe_tensors(&inputs[i]),
                eager_ms: eager_s.get(i).copied().unwrap_or(0.0) * 1000.0,
            });
        }
        let samples = Samples {
            specs,
            inputs,
            files,
            expected: outputs,
        };

        // The device probe runs in a worker while libtorch runs the variants here.
        let probe = if self.opts.replay.is_none() {
            Some(self.send_device_probe(case, &req, &exported, &samples)?)
        } else {
            None
        };

        // 5. Each variant in libtorch, on every sample.
        let mut modules: BTreeMap<Variant, CModule> = BTreeMap::new();
        let mut runs: BTreeMap<Variant, Vec<SampleRun>> = BTreeMap::new();
        let mut load_errors: BTreeMap<Variant, ErrorBody> = BTreeMap::new();
        let mut run_ms: BTreeMap<Variant, f64> = BTreeMap::new();
        for &variant in &case.spec.variants {
            let export = export_of(&exported, variant)?;
            let Some(path) = export.path.as_deref().filter(|_| export.ok) else {
                continue;
            };
            match load_module(path, Device::Cpu) {
                Ok(m) => {
                    let t = Instant::now();
                    let r = samples
                        .inputs
                        .iter()
                        .zip(&samples.expected)
                        .map(|(i, e)| run_sample(&m, &wire, i, e, tol))
                        .collect();
                    run_ms.insert(variant, t.elapsed().as_secs_f64() * 1e3);
                    self.torch_ms += t.elapsed().as_secs_f64() * 1e3;
                    runs.insert(variant, r);
                    modules.insert(variant, m);
                }
                Err(e) => {
                    // Saved by torch 2.13 but not loadable by libtorch: a deployment fails too.
                    load_errors.insert(variant, ErrorBody::new(ErrorKind::Load, format!("{e}")));
                }
            }
        }

        // 6. A second device: on CUDA eager ran in the case's child, the variants run here; on
        //    meta everything runs in the probe service, which may still be at it.
        let probe = match probe {
            None => ProbeWait::Judged(BTreeMap::new()),
            Some(Probe::Judged(checks)) => ProbeWait::Judged(checks),
            Some(Probe::Meta(rx)) => ProbeWait::Meta(rx, None),
            Some(Probe::Cuda(id)) => {
                let runs_there = self.call(|w, timeout| w.device_probe_result(id, timeout))?;
                let checks = self.judge_device(
                    case,
                    "cuda",
                    runs_there,
                    &exported,
                    &samples,
                    &modules,
                    &runs,
                    &mut result.notes,
                );
                ProbeWait::Judged(checks)
            }
        };

        // 7. Per variant, while the case's child is there: re-trace where needed, and shrink
        //    the first failing sample.
        let mut retraces = BTreeMap::new();
        let mut counterexamples = BTreeMap::new();
        for &variant in &case.spec.variants {
            let failures = sample_failures(&samples, runs.get(&variant));
            if variant == Variant::named("traced").unwrap() && self.opts.replay.is_none() {
                retraces.insert(variant, self.retraces(case, &samples, &failures)?);
            }
            let first = runs
                .get(&variant)
                .and_then(|r| r.iter().position(|r| !matches!(r, SampleRun::Match(_))));
            if let (Some(i), Some(module)) = (first, modules.get(&variant)) {
                if nondeterministic.is_none() && self.opts.replay.is_none() {
                    let cx =
                        self.shrink(case, seed, variant, module, &samples, i, tol, &sample_dir)?;
                    counterexamples.extend(cx.map(|cx| (variant, cx)));
                }
            }
        }
        Ok(Rest {
            exported,
            samples,
            modules,
            runs,
            load_errors,
            run_ms,
            nondeterministic,
            retraces,
            counterexamples,
            probe,
        })
    }

    /// 8. The device probe's outcome (waited for if need be), then per variant: diagnose and
    ///    give the verdict.
    fn finish_inner(
        &mut self,
        case: &Case,
        rest: Rest,
        result: &mut CaseResult,
    ) -> Result<(), ErrorBody> {
        let Rest {
            exported,
            samples,
            modules,
            runs,
            load_errors,
            run_ms,
            nondeterministic,
            mut retraces,
            mut counterexamples,
            probe,
        } = rest;
        let device_checks = match probe {
            ProbeWait::Judged(checks) => checks,
            ProbeWait::Meta(rx, got) => match got.unwrap_or_else(|| self.wait_probe(&rx)) {
                Ok(runs_there) => self.judge_device(
                    case,
                    "meta",
                    runs_there,
                    &exported,
                    &samples,
                    &modules,
                    &runs,
                    &mut result.notes,
                ),
                Err(probe::Failure::Interrupted) => {
                    return Err(ErrorBody::new(ErrorKind::Interrupted, "interrupted"))
                }
                Err(probe::Failure::Failed(why)) => {
                    result.notes.push(format!(
                        "device probe on meta failed: {why}; device portability is not judged"
                    ));
                    BTreeMap::new()
                }
            },
        };
        if let Some(n) = &nondeterministic {
            result.notes.push(format!("eager is nondeterministic: {n}"));
        }
        for &variant in &case.spec.variants {
            let export = export_of(&exported, variant)?;
            let export_error = export.error.as_ref().filter(|_| !export.ok);
            let load_error = load_errors.get(&variant).map(|e| e.message.as_str());
            let first_raise = runs.get(&variant).and_then(|r| {
                r.iter().zip(&samples.specs).find_map(|(r, s)| match r {
                    SampleRun::Raised(m) => Some((s.id.clone(), m.clone())),
                    _ => None,
                })
            });
            let (retrace_values, retrace_shapes) =
                retraces.remove(&variant).unwrap_or((None, None));
            let obs = Observation {
                variant,
                export_error,
                load_error,
                first_raise: first_raise.as_ref().map(|(s, m)| (s.as_str(), m.as_str())),
                samples: sample_failures(&samples, runs.get(&variant)),
                warnings: &export.warnings,
                evidence: &exported.evidence,
                nondeterministic: nondeterministic.clone(),
                device: device_checks.get(&variant),
                retrace_values: retrace_values.as_ref().map(|(s, r)| (s.as_str(), r)),
                retrace_shapes: retrace_shapes.as_ref().map(|(s, r)| (s.as_str(), r)),
            };
            let findings = diagnose::diagnose(&obs);
            let variant_runs = runs.get(&variant).map(Vec::as_slice).unwrap_or(&[]);
            let info = ExportInfo {
                ok: export.ok,
                seconds: export.seconds,
                artifact: export.path.as_ref().map(|p| p.display().to_string()),
                code: export.code.clone(),
                constants: export.constants.clone(),
                modules: export.modules.clone(),
                error: export_error.cloned(),
                warnings: export.warnings.clone(),
            };
            let vr = verdict(
                case,
                variant,
                self.opts.replay.is_some(),
                VariantFacts {
                    export: info,
                    findings,
                    samples: &samples,
                    runs: variant_runs,
                    groups: group_stats(&samples.specs, variant_runs),
                    device_check: device_checks.get(&variant).cloned(),
                    counterexample: counterexamples.remove(&variant),
                    run_ms: run_ms.get(&variant).copied().unwrap_or(0.0),
                },
            );
            result.variants.insert(variant, vr);
        }
        Ok(())
    }

    /// Wait for a probe's outcome, within the case's time limit. While waiting, this job's fork
    /// server is idle: if the probe server is gone, fork another from it.
    fn wait_probe(&mut self, rx: &Receiver<probe::Outcome>) -> probe::Outcome {
        loop {
            if harness::interrupt::requested() {
                return Err(probe::Failure::Interrupted);
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(probe::Failure::Failed(
                    "it did not answer within the case's time limit".into(),
                ));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Timeout) => self.fork_probe_server_if_wanted(),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(probe::Failure::Failed("the probe service stopped".into()))
                }
            }
        }
    }

    /// Eager on the given `(id, file)` requests; outputs (with the seconds the worker timed the
    /// forward call) in request order.
    fn eager(
        &mut self,
        case: &Case,
        specs: &[SampleSpec],
        inputs: &[Vec<(String, Tensor)>],
        requests: &[(String, SampleRef)],
        dir: &Path,
    ) -> Result<Vec<(Value, f64)>, ErrorBody> {
        let names = case.wire_names();
        let replies =
            self.call(|w, timeout| w.eager(&case.name, requests, &names, dir, timeout))?;
        let mut values = Vec::with_capacity(replies.len());
        // The worker writes one file per call (`<sample id>/o...`): read it once.
        let mut read: Option<(PathBuf, std::collections::HashMap<String, Tensor>)> = None;
        for (i, e) in replies.iter().enumerate() {
            let base = e.id.split('#').next().unwrap_or(&e.id);
            let what = match specs.iter().position(|s| s.id == base) {
                Some(k) => format!(
                    "sample {} ({}; {})",
                    specs[k].id,
                    String::from(specs[k].group.clone()),
                    describe_tensors(&inputs[k])
                ),
                None => format!("sample {}", e.id),
            };
            if !e.ok {
                let mut err = e
                    .error
                    .clone()
                    .unwrap_or_else(|| ErrorBody::new(ErrorKind::Eager, String::new()));
                err.message = if err.kind == "unsupported_output" {
                    format!(
                        "eager's output on {what} cannot be compared: {}",
                        err.message
                    )
                } else {
                    err.kind = "eager_raised".into();
                    format!("eager raised on {what}: {}", err.message)
                };
                return Err(err);
            }
            let (Some(path), Some(output)) = (&e.path, &e.output) else {
                return Err(ErrorBody::new(ErrorKind::Protocol,
                    format!("eager reply {i} lacks its output"),
                ));
            };
            if read.as_ref().is_none_or(|(p, _)| p != path) {
                let t = tensors::read(path).map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{e:#}")))?;
                read = Some((path.clone(), t));
            }
            let tensors = &mut read.as_mut().expect("just read").1;
            let value = Value::from_wire(output, tensors)
                .map_err(|m| ErrorBody::new(ErrorKind::UnsupportedOutput, format!("{what}: {m}")))?;
            values.push((value, e.seconds.unwrap_or(0.0)));
        }
        self.torch_ms += values.iter().map(|(_, s)| s * 1e3).sum::<f64>();
        Ok(values)
    }

    /// Fork the probe server from this job's fork server (idle between cases) when the probe
    /// service wants one and no other job is forking it.
    fn fork_probe_server_if_wanted(&mut self) {
        if self.probe.claim_start() {
            let server = self.call(|w, timeout| w.probe_server(timeout));
            self.probe
                .started(server.map_err(|e| error_summary(&e.message)));
        }
    }

    /// Start the device probe on the trace input: on CUDA, eager in the case's child (the
    /// variants run here later); else on the meta device, which tch does not expose, eager and
    /// the saved artifacts in a child of the probe server, and only when a graph names a device.
    fn send_device_probe(
        &mut self,
        case: &Case,
        load: &LoadRequest<'_>,
        exported: &ExportReply,
        samples: &Samples,
    ) -> Result<Probe, ErrorBody> {
        let names = case.wire_names();
        let file = samples.files[0].clone();
        if tch::Cuda::is_available() {
            let id = self.call(|w, _| w.device_probe(&case.name, &file, &names, "cuda", &[]))?;
            return Ok(Probe::Cuda(id));
        }
        let exports: Vec<(Variant, &Export)> = Variant::ALL
            .iter()
            .filter_map(|&v| Some((v, export_of(exported, v).ok().filter(|e| e.ok)?)))
            .collect();
        if case.spec.check.device_probe == DeviceProbe::Auto
            && exports.iter().all(|(_, e)| e.device_pins.is_empty())
        {
            let not_run = |v: Variant| DeviceCheck {
                device: "meta".into(),
                flagged: false,
                detail: format!(
                    "not run on meta: neither graph names a device (no Device constant, no \
                     aten::cpu, cuda or device), so every tensor {v} makes follows its inputs as \
                     eager's do (check.device_probe: always runs it anyway)"
                ),
            };
            return Ok(Probe::Judged(
                exports.iter().map(|(v, _)| (*v, not_run(*v))).collect(),
            ));
        }
        let load = serde_json::to_value(load)
            .map_err(|e| ErrorBody::new(ErrorKind::Protocol, format!("load request: {e}")))?;
        let job = probe::Job {
            load,
            case: case.name.clone(),
            input: file,
            names,
            artifacts: exports
                .iter()
                .filter_map(|(v, e)| Some((v.as_str().to_string(), e.path.clone()?)))
                .collect(),
            budget: self.deadline.saturating_duration_since(Instant::now()),
        };
        Ok(Probe::Meta(self.probe.submit(job)))
    }

    /// Judge each variant on the second device from the runs the probe made there (on CUDA,
    /// eager's; the variants run here).
    #[allow(clippy::too_many_arguments)]
    fn judge_device(
        &mut self,
        case: &Case,
        device: &str,
        (mut probe, seconds): probe::Runs,
        exported: &ExportReply,
        samples: &Samples,
        modules: &BTreeMap<Variant, CModule>,
        runs: &BTreeMap<Variant, Vec<SampleRun>>,
        notes: &mut Vec<String>,
    ) -> BTreeMap<Variant, DeviceCheck> {
        let cpu_matches: BTreeMap<Variant, bool> = runs
            .iter()
            .map(|(v, r)| (*v, matches!(r.first(), Some(SampleRun::Match(_)))))
            .collect();
        let cuda = device == "cuda";
        self.torch_ms += seconds * 1e3;
        let eager = probe.remove("eager").unwrap_or(ProbeRun {
            ok: false,
            output: None,
            error: None,
        });
        let eager_value = match (&eager.output, eager.ok) {
            (Some(o), true) => Value::from_wire(o, &mut Default::default()).ok(),
            _ => None,
        };
        let Some(eager_value) = eager_value else {
            let why = eager
                .error
                .map(|e| error_summary(&e.message))
                .unwrap_or_default();
            notes.push(format!(
                "device probe on {device} skipped: eager itself does not run there ({why}), so no \
                 variant can be judged for device portability"
            ));
            return BTreeMap::new();
        };
        let mut checks = BTreeMap::new();
        for &variant in modules.keys() {
            let run: Result<Value, String> = if cuda {
                let on = Device::Cuda(0);
                let on_device: Vec<(String, Tensor)> = samples.inputs[0]
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_device(on)))
                    .collect();
                let args = arguments(&case.wire_names(), &on_device);
                let _guard = tch::no_grad_guard();
                let m = exported_path(exported, variant)
                    .ok_or_else(|| "no artifact".to_string())
                    .and_then(|p| load_module(&p, on).map_err(|e| e.to_string()));
                m.and_then(|m| {
                    m.forward_is(&args)
                        .map_err(|e| error_summary(&e.to_string()))
                })
                .and_then(|iv| Value::from_ivalue(iv).map(|v| v.describe()))
            } else {
                match probe.remove(variant.as_str()) {
                    Some(ProbeRun {
                        ok: true,
                        output: Some(o),
                        ..
                    }) => Value::from_wire(&o, &mut Default::default()),
                    Some(r) => Err(r
                        .error
                        .map(|e| error_summary(&e.message))
                        .unwrap_or_default()),
                    None => Err("no probe result".into()),
                }
            };
            let cpu_ok = cpu_matches.get(&variant).copied().unwrap_or(false);
            let check = device_verdict(device, cuda, variant, &eager_value, run, cpu_ok);
            checks.insert(variant, check);
        }
        checks
    }

    /// Trace again on the first failing trace-shape sample and the first failing new-shape one.
    #[allow(clippy::type_complexity)]
    fn retraces(
        &mut self,
        case: &Case,
        samples: &Samples,
        failures: &[(Group, Option<SampleFailure>)],
    ) -> Result<(Option<(String, Retrace)>, Option<(String, Retrace)>), ErrorBody> {
        if failures.first().is_some_and(|(_, f)| f.is_some()) {
            return Ok((None, None)); // diverges on the trace input: no specialization to explain
        }
        let names = case.wire_names();
        let mut pick =
            |pred: &dyn Fn(&Group) -> bool| -> Result<Option<(String, Retrace)>, ErrorBody> {
                let Some(i) = failures.iter().position(|(g, f)| pred(g) && f.is_some()) else {
                    return Ok(None);
                };
                let input = samples.files[i].clone();
                let id = input.sample.clone();
                let r = self.call(|w, timeout| w.retrace(&case.name, &input, &names, timeout))?;
                self.torch_ms += r.seconds * 1e3;
                let label = format!("{id} ({})", describe_tensors(&samples.inputs[i]));
                Ok(Some((label, r)))
            };
        let values = pick(&|g| *g == Group::Values)?;
        let shapes = pick(&|g| matches!(g, Group::Dim(_) | Group::Joint))?;
        Ok((values, shapes))
    }

    /// Shrink the failing sample `i` for one variant and save the minimal counterexample.
    #[allow(clippy::too_many_arguments)]
    fn shrink(
        &mut self,
        case: &Case,
        seed: u64,
        variant: Variant,
        module: &CModule,
        samples: &Samples,
        i: usize,
        tol: &Tolerances,
        dir: &Path,
    ) -> Result<Option<Counterexample>, ErrorBody> {
        let start = samples.specs[i].clone();
        let wire = case.wire_names();
        let original_kind =
            run_sample(module, &wire, &samples.inputs[i], &samples.expected[i], tol);
        let wants_raise = matches!(original_kind, SampleRun::Raised(_));
        let mut fatal = None;
        let mut n = 0usize;
        let mut torch_ms = 0.0;
        let (min, round_trips) = {
            let mut fails = |cand: &SampleSpec| -> bool {
                if fatal.is_some() {
                    return false;
                }
                n += 1;
                let id = format!("{}-shrink{n}", start.id);
                let inputs = materialize(case, cand);
                let path = match write_sample(dir, &id, &inputs) {
                    Ok(p) => p,
                    Err(e) => {
                        fatal = Some(e);
                        return false;
                    }
                };
                let cand_spec = SampleSpec {
                    id: id.clone(),
                    ..cand.clone()
                };
                let expected = match self.eager(
                    case,
                    std::slice::from_ref(&cand_spec),
                    std::slice::from_ref(&inputs),
                    &[(
                        id.clone(),
                        SampleRef {
                            file: path,
                            sample: id,
                        },
                    )],
                    dir,
                ) {
                    Ok(mut v) => v.remove(0).0,
                    Err(e) if e.kind == "eager_raised" => return false, // not a valid input
                    Err(e) => {
                        fatal = Some(e);
                        return false;
                    }
                };
                let t = Instant::now();
                let run = run_sample(module, &wire, &inputs, &expected, tol);
                torch_ms += t.elapsed().as_secs_f64() * 1e3;
                match run {
                    SampleRun::Match(_) => false,
                    SampleRun::Raised(_) => wants_raise,
                    SampleRun::Mismatch(_) => !wants_raise,
                }
            };
            shrink::shrink(case, &start, MAX_SHRINK_ROUND_TRIPS, &mut fails)
        };
        self.torch_ms += torch_ms;
        if let Some(e) = fatal {
            return Err(e);
        }
        // The minimal sample, run once more for its numbers, saved for replay.
        let inputs = materialize(case, &min);
        let min_id = format!("{}-min", start.id);
        let path = write_sample(dir, &min_id, &inputs)?;
        let min_spec = SampleSpec {
            id: min_id.clone(),
            ..min.clone()
        };
        let expected = self
            .eager(
                case,
                std::slice::from_ref(&min_spec),
                std::slice::from_ref(&inputs),
                &[(
                    min_id.clone(),
                    SampleRef {
                        file: path,
                        sample: min_id,
                    },
                )],
                dir,
            )?
            .remove(0)
            .0;
        let (kind, detail, max_abs, max_rel) =
            match run_sample(module, &wire, &inputs, &expected, tol) {
                SampleRun::Raised(e) => ("raised", e, 0.0, 0.0),
                SampleRun::Mismatch(c) | SampleRun::Match(c) => {
                    let d = c
                        .mismatches
                        .first()
                        .map(|m| format!("{}: {}", m.path, m.detail))
                        .unwrap_or_default();
                    ("mismatch", d, c.max_abs, c.max_rel)
                }
            };
        let dir = self.opts.out_dir.join("counterexamples");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{}: {e}", dir.display())))?;
        let file = dir.join(format!("{}.{variant}.safetensors", case.name));
        tensors::write(&file, &inputs).map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{e:#}")))?;
        let replay = format!(
            "cargo xtask verify {} --seed {seed} --replay {}",
            shell_word(&case.file.display().to_string()),
            shell_word(&file.display().to_string())
        );
        Ok(Some(Counterexample {
            from_sample: start.id.clone(),
            inputs: describe_tensors(&inputs),
            shapes: inputs.iter().map(|(_, t)| t.size()).collect(),
            dims: min.dims.clone(),
            precision: min.precision,
            kind: kind.into(),
            detail,
            max_abs,
            max_rel,
            file: file.display().to_string(),
            replay,
            round_trips,
        }))
    }

    /// A worker call; a dead or hung worker is dropped and the next case gets a fresh one.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Worker, Duration) -> Result<T, WorkerError>,
    ) -> Result<T, ErrorBody> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let worker = self.worker().map_err(|e| {
            ErrorBody::new(ErrorKind::Worker,
                format!("{e} (is the virtual environment set up? `cargo xtask verify` makes it)"),
            )
        })?;
        match f(worker, left) {
            Ok(v) => Ok(v),
            Err(WorkerError::Reply(body)) => Err(body),
            Err(e) => {
                let kind = match &e {
                    // Only the case's child died: the server stays for the next case.
                    WorkerError::CaseDied { .. } => {
                        return Err(ErrorBody::new(ErrorKind::Crashed, e.to_string()));
                    }
                    WorkerError::Died { .. } => "crashed",
                    // The case's child was killed; a server that survived serves the next case.
                    WorkerError::Timeout { .. }
                        if self.worker.as_mut().is_some_and(|w| w.is_alive()) =>
                    {
                        return Err(ErrorBody::new(ErrorKind::Timeout, e.to_string()));
                    }
                    WorkerError::Timeout { .. } => "timeout",
                    WorkerError::Interrupted => "interrupted",
                    _ => "worker",
                };
                self.worker = None;
                Err(ErrorBody::new(kind, e.to_string()))
            }
        }
    }
}

/// Each sample's group and how it failed (`None`: it matched), for one variant.
fn sample_failures(
    samples: &Samples,
    runs: Option<&Vec<SampleRun>>,
) -> Vec<(Group, Option<SampleFailure>)> {
    match runs {
        Some(r) => samples
            .specs
            .iter()
            .zip(r)
            .map(|(s, r)| (s.group.clone(), failure_of(r)))
            .collect(),
        None => Vec::new(),
    }
}

fn export_of(exported: &ExportReply, variant: Variant) -> Result<&Export, ErrorBody> {
    match variant {
        Variant::named("traced").unwrap() => exported.traced.as_ref(),
        Variant::named("scripted").unwrap() => exported.scripted.as_ref(),
    }
    .ok_or_else(|| ErrorBody::new(ErrorKind::Protocol, format!("no {variant} export in the reply")))
}

fn exported_path(exported: &ExportReply, variant: Variant) -> Option<PathBuf> {
    export_of(exported, variant).ok()?.path.clone()
}

/// One sample's inputs in a file of its own (names prefixed by its id, as in a batch).
fn write_sample(dir: &Path, id: &str, tensors: &[(String, Tensor)]) -> Result<PathBuf, ErrorBody> {
    write_samples(&dir.join(format!("{id}.safetensors")), [(id, tensors)])
}

/// Samples' inputs in one file, each tensor named `<sample id>/<input name>`.
fn write_samples<'a>(
    path: &Path,
    samples: impl IntoIterator<Item = (&'a str, &'a [(String, Tensor)])>,
) -> Result<PathBuf, ErrorBody> {
    let named: Vec<(String, Tensor)> = samples
        .into_iter()
        .flat_map(|(id, tensors)| {
            tensors
                .iter()
                .map(move |(n, t)| (format!("{id}/{n}"), t.shallow_clone()))
        })
        .collect();
    tensors::write(path, &named).map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{e:#}")))?;
    Ok(path.to_path_buf())
}

/// The inputs saved in a file, in forward's order (list inputs as `name.0`, `name.1`, ...).
fn read_replay(file: &Path, wire: &[String]) -> Result<Vec<(String, Tensor)>, ErrorBody> {
    let mut tensors =
        tensors::read(file).map_err(|e| ErrorBody::new(ErrorKind::Replay, format!("{e:#}")))?;
    let mut out = Vec::new();
    for n in wire {
        match n.strip_suffix("[]") {
            Some(base) => {
                let mut i = 0;
                while let Some(t) = tensors.remove(&format!("{base}.{i}")) {
                    out.push((format!("{base}.{i}"), t));
                    i += 1;
                }
            }
            None => {
                let t = tensors.remove(n).ok_or_else(|| {
                    ErrorBody::new(ErrorKind::Replay, format!("{} has no input `{n}`", file.display()))
                })?;
                out.push((n.clone(), t));
            }
        }
    }
    Ok(out)
}

/// forward's arguments: one tensor per plain input, a `List[Tensor]` per list input (`name[]`
/// in `wire`, tensors `name.0`, `name.1`, ...). Deep copies: a model that writes into its input
/// must not change the next run's input.
fn arguments(wire: &[String], input: &[(String, Tensor)]) -> Vec<IValue> {
    wire.iter()
        .map(|n| match n.strip_suffix("[]") {
            Some(base) => {
                let prefix = format!("{base}.");
                IValue::TensorList(
                    input
                        .iter()
                        .filter(|(k, _)| {
                            k.strip_prefix(&prefix)
                                .is_some_and(|i| i.parse::<usize>().is_ok())
                        })
                        .map(|(_, t)| t.copy())
                        .collect(),
                )
            }
            None => IValue::Tensor(
                input
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, t)| t.copy())
                    .unwrap_or_else(|| Tensor::zeros([0], (tch::Kind::Float, Device::Cpu))),
            ),
        })
        .collect()
}

fn load_module(path: &Path, device: Device) -> Result<CModule, tch::TchError> {
    let mut m = CModule::load_on_device(path, device)?;
    m.set_eval();
    Ok(m)
}

fn run_sample(
    module: &CModule,
    wire: &[String],
    input: &[(String, Tensor)],
    expected: &Value,
    tol: &Tolerances,
) -> SampleRun {
    let _guard = tch::no_grad_guard();
    let args = arguments(wire, input);
    match module.forward_is(&args) {
        Err(e) => SampleRun::Raised(error_summary(&e.to_string())),
        Ok(iv) => match Value::from_ivalue(iv) {
            Err(m) => SampleRun::Raised(m),
            Ok(actual) => {
                let c = compare(expected, &actual, tol);
                if c.is_match() {
                    SampleRun::Match(c)
                } else {
                    SampleRun::Mismatch(c)
                }
            }
        },
    }
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
fn spec_info(case: &Case) -> SpecInfo {
    let spec = &case.spec;
    SpecInfo {
        inputs: spec
            .inputs
            .iter()
            .map(|i| InputInfo {
                name: i.name.clone(),
                shape: format!(
                    "[{}]",
                    i.shape
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                dtypes: i.dtypes().iter().map(|d| d.to_string()).collect(),
                values: match i.values() {
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

/// Judge one variant's run on the probe device against eager's. `cpu_ok`: the variant matched
/// eager on the trace input on the CPU. Only what the device changes is flagged: a result on
/// another device always; a raise, or another shape, dtype or structure, only when the CPU run
/// was right (otherwise that divergence is the CPU's finding, not the device's).
fn device_verdict(
    device: &str,
    cuda: bool,
    variant: Variant,
    eager: &Value,
    run: Result<Value, String>,
    cpu_ok: bool,
) -> DeviceCheck {
    let eager_kind = describe_leaf(eager);
    let (flagged, detail) = match run {
        // The meta device has no data and not every kernel: such a failure says nothing about
        // the variant's device handling.
        Err(e) if !cuda && meta_cannot_run(&e) => (
            false,
            format!("inconclusive: {variant} cannot run on meta at all ({e})"),
        ),
        Err(e) => (
            cpu_ok,
            format!("on {device} eager returns {eager_kind}; {variant} raised: {e}"),
        ),
        Ok(v) => {
            let exact: Tolerances = Tolerance {
                rtol: 0.0,
                atol: 0.0,
            }
            .into();
            let c = compare(eager, &v, &exact);
            match c.mismatches.first() {
                Some(m) => (
                    m.kind == MismatchKind::Device || cpu_ok,
                    format!("on {device}, {variant} at {}: {}", m.path, m.detail),
                ),
                None => (
                    false,
                    format!("on {device}, {variant} returns {eager_kind} like eager"),
                ),
            }
        }
    };
    DeviceCheck {
        device: device.into(),
        flagged,
        detail,
    }
}

/// Errors that come from the meta device's limits (no data, missing kernels), not from the
/// model's device handling.
fn meta_cannot_run(message: &str) -> bool {
    let m = message.to_lowercase();
    ["meta tensors", "meta kernel", "'meta' backend", "fake impl"]
        .iter()
        .any(|p| m.contains(p))
}

/// `Tensor[3, 5] float32 on meta` for a described output's first tensor.
fn describe_leaf(v: &Value) -> String {
    match v {
        Value::Desc {
            shape,
            dtype,
            device,
        } => format!("a {dtype} tensor of shape {shape:?} on {device}"),
        Value::Tuple(items) | Value::List(items) => items
            .first()
            .map(describe_leaf)
            .map(|d| format!("({d}, ...)"))
            .unwrap_or_else(|| v.kind()),
        other => other.kind(),
    }
}

fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_alphanumeric() || "/._-:=+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
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
}

/// Apply the case file's expectations to what was observed.
fn verdict(case: &Case, variant: Variant, replay: bool, facts: VariantFacts<'_>) -> VariantResult {
    // A replay checks one saved input: whether it still diverges, not the diagnosis.
    let expected = if replay {
        Vec::new()
    } else {
        case.expected(variant).to_vec()
    };
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
    let mut max_abs: f64 = 0.0;
    let mut max_rel: f64 = 0.0;
    let mut first_failure = None;
    for (i, r) in facts.runs.iter().enumerate() {
        let s = &facts.samples.specs[i];
        let (kind, path, detail, c) = match r {
            SampleRun::Match(c) => {
                max_abs = max_abs.max(c.max_abs);
                max_rel = max_rel.max(c.max_rel);
                continue;
            }
            SampleRun::Mismatch(c) => {
                max_abs = max_abs.max(c.max_abs);
                max_rel = max_rel.max(c.max_rel);
                let m = &c.mismatches[0];
                ("mismatch", Some(m.path.clone()), m.detail.clone(), Some(c))
            }
            SampleRun::Raised(e) => ("raised", None, e.clone(), None),
        };
        if first_failure.is_none() {
            first_failure = Some(Failure {
                sample: s.id.clone(),
                group: s.group.clone().into(),
                inputs: describe_tensors(&facts.samples.inputs[i]),
                shapes: facts.samples.inputs[i]
                    .iter()
                    .map(|(_, t)| t.size())
                    .collect(),
                kind: kind.into(),
                path,
                detail,
                max_abs: c.map(|c| c.max_abs).unwrap_or(0.0),
                max_rel: c.map(|c| c.max_rel).unwrap_or(0.0),
            });
        }
    }
    let what = describe_observation(
        &observed,
        &facts.findings,
        first_failure.as_ref(),
        samples_failed,
        samples_run,
    );
    let ids = |p: &[Pitfall]| p.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ");
    let hard = observed.iter().any(|p| {
        matches!(
            p,
            Pitfall::TraceError | Pitfall::ScriptCompileError | Pitfall::RuntimeError
        )
    });
    let (outcome, message) = if observed.is_empty() && expected.is_empty() {
        (
            Outcome::Pass,
            format!("matches eager on {samples_run} samples"),
        )
    } else if observed.is_empty() {
        (
            Outcome::Xpass,
            format!(
                "expected {} but matches eager on {samples_run} samples: the expectation is stale",
                ids(&expected)
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
                ids(&expected),
                ids(&observed),
                ids(&missing)
            ),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_summary_finds_the_error_line() {
        let interp =
            "The following operation failed in the TorchScript interpreter.\nTraceback of \
                      TorchScript (most recent call last):\n  File \"code/__torch__.py\", line 9\n\
                      RuntimeError: Expected all tensors to be on the same device\n";
        assert_eq!(
            error_summary(interp),
            "RuntimeError: Expected all tensors to be on the same device"
        );
        assert_eq!(
            error_summary("shape mismatch\nException raised from x\nframe #0: y"),
            "shape mismatch"
        );
        assert_eq!(
            error_summary("RuntimeError: RuntimeError: boom"),
            "RuntimeError: boom"
        );
        assert!(meta_cannot_run(
            "RuntimeError: Tensor.item() cannot be called on meta tensors"
        ));
        assert!(meta_cannot_run(
            "NotImplementedError: aten::equal: attempted to run this operator with Meta tensors"
        ));
        assert!(!meta_cannot_run(
            "RuntimeError: Tensor on device cpu is not on the expected device meta!"
        ));
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("cases/a_b.yaml"), "cases/a_b.yaml");
        assert_eq!(shell_word("my cases/it's.yaml"), "'my cases/it'\\''s.yaml'");
    }
}
