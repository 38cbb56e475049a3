//! The device probe on meta, as a service: one thread per run owns the probe server (a second
//! fork server, warmed for the meta device; see [`Worker::probe_server`]) and runs the probes
//! every job submits, one after another, each in a fresh child of it.
//!
//! A job submits a probe and goes on: it runs the case's variants, and when the case has
//! nothing else to do but the probe is still running (the probe server warms up for about
//! 0.6 s at the start of a run), the job sets the case aside and runs the next one. The probe
//! server is forked from a job's own fork server while that one is idle (between cases), so
//! the service asks for it ([`ProbeService::claim_start`]) instead of forking it itself: when
//! the first probe arrives (a run with nothing to probe never pays for its warm-up), and again
//! if it dies, at most [`MAX_STARTS`] times in a run.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value as Json;

use crate::worker::{ProbeRun, SampleRef, Worker, WorkerError};

/// Probe servers started in one run, at most (the first, and restarts after deaths).
pub const MAX_STARTS: usize = 3;

/// One probe: load the case's model in a child of the probe server, then run eager and the
/// saved artifacts there with the trace input moved to meta.
#[derive(Debug, Clone)]
pub struct Job {
    /// The case's `load` request, as the case's own child got it.
    pub load: crate::protocol::LoadRequest,
    pub case: String,
    pub input: SampleRef,
    pub names: Vec<String>,
    /// `(variant, artifact)` to load on meta.
    pub artifacts: Vec<(String, PathBuf)>,
    /// How long each of the probe's calls may take (what is left of the case's time limit).
    pub budget: Duration,
}

/// A probe's runs (eager's and each variant's, by name) and the seconds the worker spent.
pub type Runs = (BTreeMap<String, ProbeRun>, f64);

#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Ctrl-C or SIGTERM: the case stops like any other.
    Interrupted,
    /// The probe could not run (why); the case goes on without a device judgement.
    Failed(String),
}

pub type Outcome = Result<Runs, Failure>;

enum Msg {
    Server(Worker),
    StartFailed(String),
    Probe(Job, Sender<Outcome>),
}

pub struct ProbeService {
    /// `None` once dropped (which ends the thread's loop).
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    /// No probe server, and no job forking one: the next idle job should.
    wanted: Arc<AtomicBool>,
    /// A probe was submitted (the probe server is wanted from then on).
    asked: AtomicBool,
    starts: AtomicUsize,
}

impl ProbeService {
    /// Start the service's thread; the probe server itself comes from the first idle job.
    pub fn start() -> Arc<ProbeService> {
        let (tx, rx) = mpsc::channel();
        let wanted = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&wanted);
        let thread = std::thread::spawn(move || serve(rx, &flag));
        Arc::new(ProbeService {
            tx: Some(tx),
            thread: Some(thread),
            wanted,
            asked: AtomicBool::new(false),
            starts: AtomicUsize::new(0),
        })
    }

    /// Should the calling job, whose fork server is idle, fork the probe server now? A `true`
    /// makes it the one job doing so; it must then call [`ProbeService::started`].
    pub fn claim_start(&self) -> bool {
        if self.starts.load(Ordering::SeqCst) >= MAX_STARTS {
            return false;
        }
        if self.wanted.swap(false, Ordering::SeqCst) {
            self.starts.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// The probe server a job forked (or why it could not).
    pub fn started(&self, server: Result<Worker, String>) {
        let msg = match server {
            Ok(w) => Msg::Server(w),
            Err(why) => {
                if self.starts.load(Ordering::SeqCst) < MAX_STARTS {
                    self.wanted.store(true, Ordering::SeqCst);
                }
                Msg::StartFailed(why)
            }
        };
        self.send(msg);
    }

    /// Queue a probe; its outcome arrives on the returned channel.
    pub fn submit(&self, job: Job) -> Receiver<Outcome> {
        if !self.asked.swap(true, Ordering::SeqCst) {
            self.wanted.store(true, Ordering::SeqCst);
        }
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Probe(job, tx));
        rx
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg);
        }
    }
}

impl Drop for ProbeService {
    /// Close the queue and wait for the thread, which shuts the probe server down.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The service's loop: probes wait while no server is there, and run in order once one is.
fn serve(rx: Receiver<Msg>, wanted: &AtomicBool) {
    let mut server: Option<Worker> = None;
    let mut waiting: VecDeque<(Job, Sender<Outcome>)> = VecDeque::new();
    for msg in rx {
        match msg {
            Msg::Server(w) => server = Some(w),
            Msg::StartFailed(why) => {
                // Nobody can run the waiting probes now; say why.
                for (_, reply) in waiting.drain(..) {
                    let _ = reply.send(Err(Failure::Failed(format!(
                        "the probe server did not start: {why}"
                    ))));
                }
                continue;
            }
            Msg::Probe(job, reply) => waiting.push_back((job, reply)),
        }
        while server.is_some() {
            let Some((job, reply)) = waiting.pop_front() else {
                break;
            };
            let outcome = run(&mut server, &job);
            if server.is_none() {
                wanted.store(true, Ordering::SeqCst);
            }
            let _ = reply.send(outcome);
        }
    }
}

/// One probe in a fresh child of the server; a dead server is dropped (and `slot` emptied).
fn run(slot: &mut Option<Worker>, job: &Job) -> Outcome {
    let w = slot.as_mut().expect("called with a server");
    let t = job.budget;
    let runs = w
        .begin_case(t, None)
        .and_then(|_| w.call::<Json>(&crate::protocol::Request::Load(&job.load), t))
        .and_then(|_| w.device_probe(&job.case, &job.input, &job.names, "meta", &job.artifacts))
        .and_then(|id| w.device_probe_result(id, t))
        .and_then(|r| w.end_case().map(|_| r));
    match runs {
        Ok(r) => Ok(r),
        Err(WorkerError::Interrupted) => {
            *slot = None;
            Err(Failure::Interrupted)
        }
        Err(e) => {
            if !w.is_alive() || w.end_case().is_err() {
                *slot = None;
            }
            Err(Failure::Failed(crate::diagnose::error_summary(
                &e.to_string(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            load: crate::protocol::LoadRequest {
                case: "c".into(),
                source: None,
                import: Some("nowhere".into()),
                entry: "M".into(),
                kwargs: Default::default(),
                eval: true,
                seed: 0,
                weights: None,
                weights_strict: true,
                device: None,
            },
            case: "c".into(),
            input: SampleRef {
                file: PathBuf::from("/nonexistent"),
                sample: "s0".into(),
            },
            names: vec!["x".into()],
            artifacts: Vec::new(),
            budget: Duration::from_secs(1),
        }
    }

    #[test]
    fn one_job_at_a_time_forks_the_probe_server_and_restarts_are_bounded() {
        let service = ProbeService::start();
        // Nobody forks one before a probe asks for it.
        assert!(!service.claim_start());
        let _waiting = service.submit(job());
        let mut claims = 0;
        for _ in 0..10 {
            let first = service.claim_start();
            // While one job forks it, nobody else does.
            assert!(!service.claim_start());
            if !first {
                break;
            }
            claims += 1;
            service.started(Err("fork failed".into()));
        }
        assert_eq!(claims, MAX_STARTS);
    }

    #[test]
    fn probes_waiting_for_a_server_that_cannot_start_are_told_why() {
        let service = ProbeService::start();
        let waiting = service.submit(job());
        assert!(service.claim_start());
        service.started(Err("fork failed".into()));
        let outcome = waiting.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            outcome.unwrap_err(),
            Failure::Failed("the probe server did not start: fork failed".into())
        );
        // The next idle job is asked to try again.
        assert!(service.claim_start());
    }
}
