//! One case's own state while it runs: its clock, samples, exports, per-variant runs and what
//! diagnosis needs later. The long-lived runner holds none of this; parking a case (while its
//! device probe runs) is keeping this value, and finishing it is handing it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use tch::{Device, Tensor};

use harness::case::{Case, ModelOrigin, Variant};
use harness::diagnose::DeviceCheck;
use harness::options::{Options, RunDevice, DEFAULT_CASE_TIMEOUT};
use harness::plan::SampleSpec;
use harness::probe;
use harness::results::{CaseResult, Counterexample, ModelInfo};
use harness::timeline::Stopwatch;
use harness::worker::{ErrorBody, ExportReply, LoadRequest, Retrace, SampleRef};

use crate::compare::{Comparison, Tolerances};
use crate::value::{device_name, Value};

/// A case's time: its limit, and the time it has run (not the time it was set aside), with the
/// torch work and worker start-up inside it.
pub struct Clock {
    pub limit: Duration,
    /// When the case must be done (moved on by the time it was parked).
    pub deadline: Instant,
    ran: Duration,
    running_since: Option<Instant>,
    /// Torch work (trace, script, forward passes), ms.
    pub torch_ms: f64,
    /// Waiting for a worker to start, ms.
    pub start_ms: f64,
    /// The case's phases, lap by lap (`harness::timeline`).
    pub watch: Stopwatch,
}

impl Clock {
    fn start(limit: Duration) -> Clock {
        let now = Instant::now();
        Clock {
            limit,
            deadline: now + limit,
            ran: Duration::ZERO,
            running_since: Some(now),
            torch_ms: 0.0,
            start_ms: 0.0,
            watch: Stopwatch::new(),
        }
    }

    /// The case is set aside: its time stops.
    pub fn pause(&mut self) {
        if let Some(t) = self.running_since.take() {
            self.ran += t.elapsed();
        }
    }

    /// The case is taken up again: its deadline moves by the time it waited.
    pub fn resume(&mut self) {
        if self.running_since.is_none() {
            let left = self.limit.saturating_sub(self.ran);
            self.deadline = Instant::now() + left;
            self.running_since = Some(Instant::now());
            self.watch.restart();
        }
    }

    /// The case's own time so far.
    pub fn ran(&self) -> Duration {
        self.ran + self.running_since.map_or(Duration::ZERO, |t| t.elapsed())
    }

    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn add_torch(&mut self, since: Instant) {
        self.torch_ms += since.elapsed().as_secs_f64() * 1e3;
    }

    /// Torch work of `ms` timed where it ran (the worker), carved out of the current phase as
    /// `phase`.
    pub fn worker_torch(&mut self, phase: &str, ms: f64) {
        self.torch_ms += ms;
        self.watch.carve(phase, ms);
    }

    /// The time since the last phase was `phase`.
    pub fn lap(&mut self, phase: &str) {
        self.watch.lap(phase);
    }
}

/// One case's inputs and eager outputs.
pub struct Samples {
    pub specs: Vec<SampleSpec>,
    pub inputs: Vec<Vec<(String, Tensor)>>,
    pub files: Vec<SampleRef>,
    pub expected: Vec<Value>,
}

/// How one sample went for one variant.
pub enum SampleRun {
    Match(Comparison),
    Mismatch(Comparison),
    Raised(String),
}

/// Re-traces on the first failing value sample and the first failing shape sample, labelled
/// with the sample.
#[derive(Default)]
pub struct Retraces {
    pub values: Option<(String, Retrace)>,
    pub shapes: Option<(String, Retrace)>,
}

/// What happened to one variant of the case.
#[derive(Default)]
pub struct VariantRun {
    /// Loaded in libtorch, or the saved program the worker runs (absent: not exported, or not
    /// loadable).
    pub runnable: Option<super::runnable::Runnable>,
    /// What its forward is called with, in its order (`io::signature`).
    pub args: Vec<super::io::Slot>,
    pub runs: Vec<SampleRun>,
    pub load_error: Option<ErrorBody>,
    pub run_ms: f64,
    pub retraces: Retraces,
    pub counterexample: Option<Counterexample>,
    /// Checks that could not run, said as warnings.
    pub not_judged: Vec<String>,
}

/// The device probe, once the variants have run.
pub enum ProbeWait {
    /// Nothing to wait for: judged already (or not run, with a note).
    Judged(BTreeMap<Variant, DeviceCheck>),
    /// On a real second device (CUDA, or the CPU for a case run on CUDA): eager runs in the
    /// case's child (this request id); collected before the child ends.
    Device(u64, Device),
    /// On meta, in the probe service: its outcome comes on the channel (kept once taken).
    Meta(Receiver<probe::Outcome>, Option<probe::Outcome>),
}

impl ProbeWait {
    /// Has the outcome arrived (without waiting)?
    pub fn ready(&mut self) -> bool {
        match self {
            ProbeWait::Judged(_) | ProbeWait::Device(..) | ProbeWait::Meta(_, Some(_)) => true,
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

/// Everything about one case while it runs.
pub struct CaseRun {
    pub case: Case,
    pub seed: u64,
    pub replay: Option<PathBuf>,
    pub tol: Tolerances,
    pub clock: Clock,
    /// The result as it is built up.
    pub result: CaseResult,
    /// The samples' files (removed when the case is done).
    pub sample_dir: PathBuf,
    /// The saved artifacts (`<out>/artifacts/<case>/`).
    pub artifact_dir: PathBuf,
    /// The load request as sent, for the probe server (which loads the model again).
    pub load: Option<LoadRequest>,
    pub samples: Option<Samples>,
    pub exported: Option<ExportReply>,
    pub variants: BTreeMap<Variant, VariantRun>,
    pub nondeterministic: Option<String>,
    pub probe: ProbeWait,
    /// Where eager and the variants run: the device the case resolved to, or why it cannot
    /// run (CUDA asked for where libtorch sees none).
    pub device: Result<Device, String>,
}

impl CaseRun {
    /// A case about to run, its clock started.
    pub fn new(case: &Case, opts: &Options, work: &Path) -> CaseRun {
        let limit = opts.timeout.unwrap_or_else(|| {
            case.spec
                .check
                .timeout_s
                .map(Duration::from_secs_f64)
                .unwrap_or(DEFAULT_CASE_TIMEOUT)
        });
        let seed = opts.seed.unwrap_or(case.spec.check.seed);
        let device = match opts.device.resolve(&case.spec.check) {
            Ok(Some(RunDevice::Cuda)) => Ok(Device::Cuda(0)),
            Ok(_) => Ok(Device::Cpu),
            Err(why) => Err(format!("check.device: cuda: {why}")),
        };
        let mut result = blank_result(case, seed);
        result.device = device.as_ref().ok().map(|d| device_name(*d));
        CaseRun {
            device,
            seed,
            replay: opts.replay.clone(),
            tol: Tolerances::from_check(&case.spec.check),
            clock: Clock::start(limit),
            result,
            sample_dir: work.join(&case.name),
            artifact_dir: opts.out_dir.join("artifacts").join(&case.name),
            load: None,
            samples: None,
            exported: None,
            variants: BTreeMap::new(),
            nondeterministic: None,
            probe: ProbeWait::Judged(BTreeMap::new()),
            case: case.clone(),
        }
    }

    /// The case's device (once [`Runner::begin`](super::Runner) let it run at all).
    pub fn on(&self) -> Device {
        *self.device.as_ref().unwrap_or(&Device::Cpu)
    }

    pub fn is_replay(&self) -> bool {
        self.replay.is_some()
    }

    /// The samples, once made.
    pub fn samples(&self) -> &Samples {
        self.samples
            .as_ref()
            .expect("samples are made before they are used")
    }

    /// Has its probe answered, so that finishing it will not wait?
    pub fn ready(&mut self) -> bool {
        self.probe.ready()
    }
}

/// The result of a case before it runs: what the case file says.
fn blank_result(case: &Case, seed: u64) -> CaseResult {
    let mut result = CaseResult::ran(&case.name, &case.file.display().to_string());
    result.description = case.spec.description.clone();
    result.model = Some(ModelInfo {
        origin: match &case.origin {
            ModelOrigin::Source(_) => case.spec.model.source.clone().unwrap_or_default(),
            ModelOrigin::Import(m) => m.clone(),
        },
        entry: case.spec.model.entry.clone(),
        class: None,
    });
    result.seed = Some(seed);
    result.spec = Some(super::verdict::spec_info(case));
    result
}
