//! Running a case: plan → worker (load, export the variants, eager) → libtorch (variants) →
//! compare → diagnose → shrink.
//!
//! The eager reference runs in the Python worker; the artifacts it saved run here, in libtorch
//! through `tch`, as they would in a C++ deployment. A case's state travels in its own
//! [`CaseRun`] (`context`); the [`Runner`] that outlives cases holds only the options, the worker
//! and the probe service. The phases are functions over a `CaseRun`: `phases` (in the case's
//! child: load, samples, export, eager, the variants, re-traces and shrinking), `device` (the
//! device probe and its judgement) and `verdict` (diagnosis and verdicts). A case whose every
//! other step is done while its meta probe still runs is parked by [`Runner::start_case`] (the
//! job keeps its `CaseRun`) and completed by [`Runner::finish_case`]. A model or case the harness
//! cannot run becomes a case error; a divergence is a verdict, never an error.

mod context;
mod device;
mod io;
mod phases;
mod runnable;
mod verdict;

use std::sync::Arc;
use std::time::Duration;

use harness::case::Case;
use harness::error::ErrorKind;
use harness::options::Options;
use harness::probe::ProbeService;
use harness::results::{CaseResult, CaseStatus};
use harness::timeline;
use harness::worker::{ErrorBody, Worker, WorkerError};

pub use context::CaseRun;

/// Candidates tried when shrinking one variant's counterexample (one worker round trip each).
pub const MAX_SHRINK_ROUND_TRIPS: usize = 48;

/// A case after [`Runner::start_case`].
// Moved once per case: the size of a result does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    Done(CaseResult),
    /// Waiting only for its device probe: [`Runner::finish_case`] completes it.
    Parked(Box<CaseRun>),
}

/// Runs cases one after another with one persistent worker, restarted after a crash. It keeps
/// nothing of a case.
pub struct Runner {
    opts: Options,
    worker: Option<Worker>,
    probe: Arc<ProbeService>,
    work: tempfile::TempDir,
    pub torch: String,
    pub python: String,
    /// Where the worker's installed libraries live (the cache keys on what is there).
    pub site: Vec<std::path::PathBuf>,
    /// The torch a worker was refused for: the interpreter will not change during the run, so
    /// the next cases get the same error at once instead of importing torch again each.
    refused_torch: Option<String>,
    /// A case that runs a variant in the worker (torch.export) came before the worker started:
    /// its fork server warms torch.export up once for all its children.
    warm_export: bool,
    /// The installed modules this worker's fork server was asked to preload (each once: the
    /// children of a zygote made before the preload go on naming what the zygote imported).
    preloaded: std::collections::HashSet<String>,
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
            site: Vec::new(),
            refused_torch: None,
            warm_export: false,
            preloaded: Default::default(),
            opts,
            worker: None,
            probe,
            work,
        })
    }

    /// Run one case to a result; never panics on what a model does.
    pub fn run_case(&mut self, case: &Case) -> CaseResult {
        match self.start_case(case) {
            Step::Done(result) => result,
            Step::Parked(cx) => self.finish_case(*cx),
        }
    }

    /// Run a case up to its verdicts; if only its device probe (in the probe service) is still
    /// running by then, set it aside: [`Runner::finish_case`] completes it later.
    pub fn start_case(&mut self, case: &Case) -> Step {
        self.warm_export |= case
            .variants
            .iter()
            .any(|v| v.def().runtime == harness::variant::Runtime::Worker);
        let mut cx = CaseRun::new(case, &self.opts, self.work.path());
        let outcome = self.in_child(&mut cx);
        self.end_child(&mut cx.clock);
        if let Err(error) = outcome {
            return Step::Done(self.done(failed(cx, error)));
        }
        cx.clock.pause();
        if cx.ready() {
            Step::Done(self.finish_case(cx))
        } else {
            Step::Parked(Box::new(cx))
        }
    }

    /// Complete a case [`Runner::start_case`] set aside (waiting for its probe if need be).
    pub fn finish_case(&mut self, mut cx: CaseRun) -> CaseResult {
        cx.clock.resume();
        let outcome = self.judge_device(&mut cx);
        cx.clock.lap("probe");
        let mut cx = match outcome {
            Ok(()) => {
                verdict::verdicts(&mut cx);
                cx
            }
            Err(error) => failed(cx, error),
        };
        cx.clock.lap("verdict");
        self.done(cx)
    }

    /// What the worker said of itself, for the cache and the results.
    pub fn facts(&self) -> harness::verify::WorkerFacts<'_> {
        harness::verify::WorkerFacts {
            torch: &self.torch,
            python: &self.python,
            site: &self.site,
        }
    }

    /// Drop the worker (after a panic left it in an unknown state); the next case starts one.
    pub fn forget_worker(&mut self) {
        self.worker = None;
    }

    /// Everything done in the case's forked child, in order, each step a phase of its timeline
    /// (a step may lap finer phases inside it: its own lap is then what is left).
    fn in_child(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        type Step = fn(&mut Runner, &mut CaseRun) -> Result<(), ErrorBody>;
        let steps: [(&str, Step); 9] = [
            ("fork", Runner::begin),
            ("load", Runner::load),
            ("samples", Runner::make_samples),
            ("export", Runner::export),
            ("eager", Runner::eager_samples),
            ("probe", Runner::start_device_probe),
            ("run", Runner::run_variants),
            ("probe", Runner::collect_device_probe),
            ("explain", Runner::explain_failures),
        ];
        for (phase, step) in steps {
            let done = step(self, cx);
            cx.clock.lap(phase);
            done?;
        }
        Ok(())
    }

    /// The case's child is done (either way): it exits, and the fork server, idle until the
    /// next case, imports the installed modules the child had to import itself, so the next
    /// children start with them.
    fn end_child(&mut self, clock: &mut context::Clock) {
        let Some(w) = self.worker.as_mut() else {
            return;
        };
        let libraries = match w.end_case() {
            Ok(libraries) => libraries,
            Err(_) => {
                self.worker = None;
                return clock.lap("end");
            }
        };
        clock.lap("end");
        let new: Vec<String> = libraries
            .into_iter()
            .filter(|m| !self.preloaded.contains(m))
            .collect();
        if !new.is_empty() {
            if w.preload(&new).is_err() {
                self.worker = None;
            }
            self.preloaded.extend(new);
        }
        clock.lap("preload");
    }

    /// The case's own time and torch work, and its samples' files gone.
    fn done(&self, cx: CaseRun) -> CaseResult {
        let _ = std::fs::remove_dir_all(&cx.sample_dir);
        let mut result = cx.result;
        result.duration_ms = cx.clock.ran().as_millis() as u64;
        result.torch_ms = cx.clock.torch_ms;
        result.worker_start_ms = cx.clock.start_ms;
        result.timeline = cx.clock.watch.phases;
        timeline::close(&mut result.timeline, result.duration_ms as f64);
        result
    }

    fn worker(&mut self, cx: &mut context::Clock) -> Result<&mut Worker, WorkerError> {
        if let Some(found) = &self.refused_torch {
            return Err(WorkerError::TorchVersion {
                python: self.opts.python.clone(),
                found: found.clone(),
                wanted: harness::TORCH_VERSION,
            });
        }
        if self.worker.is_none() {
            let t = std::time::Instant::now();
            let spawned = Worker::spawn(
                &self.opts.python,
                self.opts.torch_threads,
                &self.opts.python_path,
                self.warm_export,
            );
            if let Err(WorkerError::TorchVersion { found, .. }) = &spawned {
                self.refused_torch = Some(found.clone());
            }
            let w = spawned?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            cx.start_ms += ms;
            cx.watch.carve("worker_start", ms);
            self.torch = w.hello.torch.clone();
            self.python = w.hello.python.clone();
            self.site = w.hello.site.clone();
            self.preloaded.clear();
            self.worker = Some(w);
        }
        Ok(self.worker.as_mut().expect("just spawned"))
    }

    /// A worker call within the case's time; a dead or hung worker is dropped and the next case
    /// gets a fresh one.
    fn call<T>(
        &mut self,
        clock: &mut context::Clock,
        f: impl FnOnce(&mut Worker, Duration) -> Result<T, WorkerError>,
    ) -> Result<T, ErrorBody> {
        let left = clock.left();
        let worker = self.worker(clock).map_err(|e| {
            ErrorBody::new(
                ErrorKind::Worker,
                format!(
                    "{e} (is the environment set up? `{} setup` installs what the worker needs)",
                    harness::command()
                ),
            )
        })?;
        let error = match f(worker, left) {
            Ok(v) => return Ok(v),
            Err(WorkerError::Reply(body)) => return Err(body),
            Err(e) => e,
        };
        let kind = match &error {
            WorkerError::CaseDied { .. } | WorkerError::Died { .. } => ErrorKind::Crashed,
            WorkerError::Timeout { .. } => ErrorKind::Timeout,
            WorkerError::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Worker,
        };
        // Only the case's child died or was killed: a server that survived serves the next case.
        let child_only = matches!(error, WorkerError::CaseDied { .. })
            || (matches!(error, WorkerError::Timeout { .. })
                && self.worker.as_mut().is_some_and(|w| w.is_alive()));
        if !child_only {
            self.worker = None;
        }
        Err(ErrorBody::new(kind, error.to_string()))
    }
}

/// A case that stopped with an error: its status, and nothing half-done kept.
fn failed(mut cx: CaseRun, mut error: ErrorBody) -> CaseRun {
    let result = &mut cx.result;
    result.status = match error.kind {
        ErrorKind::Crashed => CaseStatus::Crashed,
        ErrorKind::Timeout => CaseStatus::Timeout,
        ErrorKind::Interrupted => CaseStatus::Interrupted,
        _ => CaseStatus::Error,
    };
    if result.status == CaseStatus::Timeout {
        error.message = format!(
            "the case took longer than its limit of {:.0} s (check.timeout_s or --timeout); \
             the worker was killed ({})",
            cx.clock.limit.as_secs_f64(),
            error.message
        );
    }
    if result.status == CaseStatus::Interrupted {
        // Nothing from a case cut short may be mistaken for a finished one's output.
        let _ = std::fs::remove_dir_all(&cx.artifact_dir);
    }
    result.error = Some(error);
    result.variants.clear();
    cx
}
