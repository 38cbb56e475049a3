//! Running a case: plan → worker (load, trace, script, eager) → libtorch (variants) → compare.
//!
//! The eager reference runs in the Python worker; the traced and scripted artifacts it saved
//! run here, in libtorch through `tch`, as they would in a C++ deployment. Each variant gets an
//! outcome from what was observed and what the case file expects. A model or case the harness
//! cannot run becomes a case error; a divergence is a verdict, never an error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tch::{CModule, IValue, Tensor};

use crate::case::{Case, ModelOrigin, Variant};
use crate::compare::{compare, Comparison, Tolerance};
use crate::pitfall::Pitfall;
use crate::plan::{self, SampleSpec};
use crate::results::{
    CaseResult, CaseStatus, ExportInfo, Failure, ModelInfo, Outcome, SampleInfo, VariantResult,
};
use crate::tensors;
use crate::value::Value;
use crate::worker::{ErrorBody, Export, LoadRequest, Worker, WorkerError};

/// Settings shared by every case of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Python interpreter with torch 2.13.0.
    pub python: PathBuf,
    /// Where artifacts go (`<out>/artifacts/<case>/traced.pt`).
    pub out_dir: PathBuf,
    /// Overrides every case's `check.seed`.
    pub seed: Option<u64>,
    /// How long one worker request may take.
    pub timeout: Duration,
}

/// Runs cases one after another with one persistent worker, restarted after a crash.
pub struct Runner {
    opts: Options,
    worker: Option<Worker>,
    work: tempfile::TempDir,
    pub torch: String,
    pub python: String,
}

impl Runner {
    pub fn new(opts: Options) -> Result<Runner, WorkerError> {
        let worker = Worker::spawn(&opts.python)?;
        let work = tempfile::Builder::new()
            .prefix("harness-run-")
            .tempdir()
            .map_err(|e| WorkerError::Protocol(format!("cannot make a work folder: {e}")))?;
        Ok(Runner {
            torch: worker.hello.torch.clone(),
            python: worker.hello.python.clone(),
            opts,
            worker: Some(worker),
            work,
        })
    }

    fn worker(&mut self) -> Result<&mut Worker, WorkerError> {
        if self.worker.is_none() {
            self.worker = Some(Worker::spawn(&self.opts.python)?);
        }
        Ok(self.worker.as_mut().expect("just spawned"))
    }

    /// Run one case to a result; never panics on what a model does.
    pub fn run_case(&mut self, case: &Case) -> CaseResult {
        let start = Instant::now();
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
            duration_ms: 0,
        };
        if let Err(error) = self.run_inner(case, seed, &mut result) {
            result.status = CaseStatus::Error;
            result.error = Some(error);
            result.variants.clear();
        }
        if let Some(w) = self.worker.as_mut() {
            if w.release(&case.name).is_err() {
                self.worker = None;
            }
        }
        let _ = std::fs::remove_dir_all(self.work.path().join(&case.name));
        result.duration_ms = start.elapsed().as_millis() as u64;
        result
    }

    fn run_inner(
        &mut self,
        case: &Case,
        seed: u64,
        result: &mut CaseResult,
    ) -> Result<(), ErrorBody> {
        let timeout = self.opts.timeout;
        if let Some(w) = &self.worker {
            w.clear_stderr_tail();
        }
        let names = case.input_names();
        let samples = plan::plan(case, seed);
        let sample_dir = self.work.path().join(&case.name);
        let artifact_dir = self.opts.out_dir.join("artifacts").join(&case.name);
        for dir in [&sample_dir, &artifact_dir] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)
                .map_err(|e| harness_error("io", format!("{}: {e}", dir.display())))?;
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
        let loaded = self.call(|w| w.load(&req, timeout))?;
        if let Some(m) = result.model.as_mut() {
            m.class = Some(loaded.class);
        }

        // 2. Inputs: every sample made once, written for the worker, kept for libtorch.
        let mut inputs: Vec<Vec<(String, Tensor)>> = Vec::with_capacity(samples.len());
        let mut files = Vec::with_capacity(samples.len());
        for s in &samples {
            let tensors = plan::materialize(case, s);
            let path = sample_dir.join(format!("{}.safetensors", s.id));
            tensors::write(&path, &tensors).map_err(|e| harness_error("io", format!("{e:#}")))?;
            files.push((s.id.clone(), path));
            inputs.push(tensors);
        }

        // 3. Trace and script on the trace input (sample 0).
        let variants: Vec<&str> = case.spec.variants.iter().map(|v| v.as_str()).collect();
        let exported = self.call(|w| {
            w.export(
                &case.name,
                &files[0].1,
                &names,
                &variants,
                &artifact_dir,
                timeout,
            )
        })?;
        if exported.eager_state_changed {
            return Err(harness_error(
                "eager_state_changed",
                "tracing or scripting changed the eager model's parameters or buffers".into(),
            ));
        }

        // 4. Eager on every sample.
        let eager = self.call(|w| w.eager(&case.name, &files, &names, &sample_dir, timeout))?;
        let mut expected = Vec::with_capacity(samples.len());
        for (s, e) in samples.iter().zip(&eager) {
            let what = format!(
                "sample {} ({}; {})",
                s.id,
                String::from(s.group.clone()),
                plan::describe(case, s)
            );
            if !e.ok {
                let mut err = e
                    .error
                    .clone()
                    .unwrap_or_else(|| harness_error("eager", String::new()));
                err.message = format!("eager raised on {what}: {}", err.message);
                return Err(err);
            }
            let (Some(path), Some(output)) = (&e.path, &e.output) else {
                return Err(harness_error(
                    "protocol",
                    format!("eager reply for {} lacks its output", s.id),
                ));
            };
            let mut tensors =
                tensors::read(path).map_err(|e| harness_error("io", format!("{e:#}")))?;
            let value = Value::from_wire(output, &mut tensors)
                .map_err(|m| harness_error("unsupported_output", format!("{what}: {m}")))?;
            expected.push(value);
            result.samples.push(SampleInfo {
                id: s.id.clone(),
                group: s.group.clone().into(),
                inputs: plan::describe(case, s),
                eager_ms: e.seconds.unwrap_or(0.0) * 1e3,
            });
        }

        // 5. Each variant in libtorch, on every sample.
        let tol = Tolerance {
            rtol: case.spec.check.rtol,
            atol: case.spec.check.atol,
        };
        for &variant in &case.spec.variants {
            let export = match variant {
                Variant::Traced => exported.traced.clone(),
                Variant::Scripted => exported.scripted.clone(),
            }
            .ok_or_else(|| {
                harness_error("protocol", format!("no {variant} export in the reply"))
            })?;
            let observed = run_variant(variant, &export, case, &samples, &inputs, &expected, tol);
            result
                .variants
                .insert(variant, verdict(case, variant, observed));
        }
        Ok(())
    }

    /// A worker call; a dead or hung worker is dropped and the next case gets a fresh one.
    fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Worker) -> Result<T, WorkerError>,
    ) -> Result<T, ErrorBody> {
        let worker = self
            .worker()
            .map_err(|e| harness_error("worker", e.to_string()))?;
        match f(worker) {
            Ok(v) => Ok(v),
            Err(WorkerError::Reply(body)) => Err(body),
            Err(e) => {
                let kind = match &e {
                    WorkerError::Died { .. } => "crashed",
                    WorkerError::Timeout { .. } => "timeout",
                    _ => "worker",
                };
                self.worker = None;
                Err(harness_error(kind, e.to_string()))
            }
        }
    }
}

fn harness_error(kind: &str, message: String) -> ErrorBody {
    ErrorBody {
        kind: kind.into(),
        message,
        traceback: Vec::new(),
        file: None,
        line: None,
        source_line: None,
    }
}

/// What running one variant showed, before expectations are applied.
struct Observed {
    export: ExportInfo,
    pitfalls: Vec<Pitfall>,
    samples_run: usize,
    samples_failed: usize,
    first_failure: Option<Failure>,
    max_abs: f64,
    max_rel: f64,
    run_ms: f64,
}

fn run_variant(
    variant: Variant,
    export: &Export,
    case: &Case,
    samples: &[SampleSpec],
    inputs: &[Vec<(String, Tensor)>],
    expected: &[Value],
    tol: Tolerance,
) -> Observed {
    let mut obs = Observed {
        export: ExportInfo {
            ok: export.ok,
            seconds: export.seconds,
            artifact: export.path.as_ref().map(|p| p.display().to_string()),
            code: export.code.clone(),
            error: export.error.clone(),
            warnings: export.warnings.clone(),
        },
        pitfalls: Vec::new(),
        samples_run: 0,
        samples_failed: 0,
        first_failure: None,
        max_abs: 0.0,
        max_rel: 0.0,
        run_ms: 0.0,
    };
    let export_pitfall = match variant {
        Variant::Traced => Pitfall::TraceError,
        Variant::Scripted => Pitfall::ScriptCompileError,
    };
    let Some(path) = export.path.as_deref().filter(|_| export.ok) else {
        obs.pitfalls.push(export_pitfall);
        return obs;
    };
    let module = match load_module(path) {
        Ok(m) => m,
        Err(e) => {
            // Saved by torch 2.13 but not loadable by libtorch: the deployment would fail too.
            obs.export.ok = false;
            obs.export.error = Some(harness_error(
                "load",
                format!("libtorch cannot load {}: {e}", path.display()),
            ));
            obs.pitfalls.push(export_pitfall);
            return obs;
        }
    };
    let start = Instant::now();
    let _guard = tch::no_grad_guard();
    for ((s, input), eager) in samples.iter().zip(inputs).zip(expected) {
        obs.samples_run += 1;
        let args: Vec<IValue> = input
            .iter()
            .map(|(_, t)| IValue::Tensor(t.shallow_clone()))
            .collect();
        let failure = match module.forward_is(&args) {
            Err(e) => Some((
                Pitfall::RuntimeError,
                "raised",
                None,
                first_line(&e.to_string()),
                0.0,
                0.0,
            )),
            Ok(iv) => match Value::from_ivalue(iv) {
                Err(m) => Some((Pitfall::OutputMismatch, "mismatch", None, m, 0.0, 0.0)),
                Ok(actual) => {
                    let c: Comparison = compare(eager, &actual, tol);
                    obs.max_abs = obs.max_abs.max(c.max_abs);
                    obs.max_rel = obs.max_rel.max(c.max_rel);
                    c.mismatches.first().map(|m| {
                        (
                            Pitfall::OutputMismatch,
                            "mismatch",
                            Some(m.path.clone()),
                            m.detail.clone(),
                            c.max_abs,
                            c.max_rel,
                        )
                    })
                }
            },
        };
        if let Some((pitfall, kind, out_path, detail, max_abs, max_rel)) = failure {
            obs.samples_failed += 1;
            if !obs.pitfalls.contains(&pitfall) {
                obs.pitfalls.push(pitfall);
            }
            if obs.first_failure.is_none() {
                obs.first_failure = Some(Failure {
                    sample: s.id.clone(),
                    group: s.group.clone().into(),
                    inputs: plan::describe(case, s),
                    shapes: plan::shapes(case, s),
                    kind: kind.into(),
                    path: out_path,
                    detail,
                    max_abs,
                    max_rel,
                });
            }
        }
    }
    obs.run_ms = start.elapsed().as_secs_f64() * 1e3;
    obs
}

fn load_module(path: &Path) -> Result<CModule, tch::TchError> {
    let mut m = CModule::load(path)?;
    m.set_eval();
    Ok(m)
}

/// libtorch errors carry a C++ backtrace; the first lines say what happened.
fn first_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Exception raised from") && !l.starts_with("frame #")
        })
        .take(3)
        .collect();
    lines.join(" | ")
}

/// Apply the case file's expectations to what was observed.
fn verdict(case: &Case, variant: Variant, obs: Observed) -> VariantResult {
    let expected = case.expected(variant).to_vec();
    let diverged = !obs.pitfalls.is_empty();
    let what = describe_observation(&obs);
    let (outcome, message) = match (diverged, expected.is_empty()) {
        (false, true) => (
            Outcome::Pass,
            format!("matches eager on {} samples", obs.samples_run),
        ),
        (false, false) => (
            Outcome::Xpass,
            format!(
                "expected {} but matches eager on {} samples: the expectation is stale",
                ids(&expected),
                obs.samples_run
            ),
        ),
        // Until the diagnosis names pitfalls precisely, any divergence meets an expectation.
        (true, false) => (
            Outcome::Xfail,
            format!("{what} (expected {})", ids(&expected)),
        ),
        (true, true) => {
            let only_mismatch = obs.pitfalls.iter().all(|p| *p == Pitfall::OutputMismatch);
            (
                if only_mismatch {
                    Outcome::Fail
                } else {
                    Outcome::Error
                },
                what,
            )
        }
    };
    VariantResult {
        outcome,
        pitfalls: obs.pitfalls,
        expected,
        message,
        samples_run: obs.samples_run,
        samples_failed: obs.samples_failed,
        first_failure: obs.first_failure,
        export: obs.export,
        max_abs: obs.max_abs,
        max_rel: obs.max_rel,
        run_ms: obs.run_ms,
    }
}

fn describe_observation(obs: &Observed) -> String {
    if !obs.export.ok {
        let err = obs.export.error.as_ref();
        let at = err
            .and_then(|e| Some(format!(" at {}:{}", e.file.as_deref()?, e.line?)))
            .unwrap_or_default();
        let msg = err.map(|e| first_line(&e.message)).unwrap_or_default();
        return format!("{}{at}: {msg}", ids(&obs.pitfalls));
    }
    match &obs.first_failure {
        Some(f) => {
            format!(
                "{}: {}/{} samples; first {} ({}; {}): {}{}",
                ids(&obs.pitfalls),
                obs.samples_failed,
                obs.samples_run,
                f.sample,
                f.group,
                f.inputs,
                f.path
                    .as_ref()
                    .map(|p| format!("{p}: "))
                    .unwrap_or_default(),
                f.detail
            )
        }
        None => ids(&obs.pitfalls),
    }
}

fn ids(p: &[Pitfall]) -> String {
    p.iter().map(|p| p.id()).collect::<Vec<_>>().join(", ")
}
