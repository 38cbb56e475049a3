//! Running the selected cases in libtorch: `N` jobs, each with its own runner and worker, take
//! case files from a shared queue; a case waiting only for its device probe is parked and
//! finished as the probe answers (all before the job ends). Everything before and after a case
//! runs (selection, the cache, snapshot checks, the results document) is the core crate's
//! `verify`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use harness::case::Case;
use harness::probe::ProbeService;
use harness::results::{CaseResult, CaseStatus, Results};
use harness::verify::{cached, results, select, stem, stored, Finished, Request};
use harness::worker::ErrorBody;

use crate::run::{Parked, Runner, Step};

/// Run every selected case, calling `on_case` as each one finishes (from the job's thread).
pub fn verify(req: &Request, on_case: impl FnMut(&CaseResult) + Send) -> anyhow::Result<Results> {
    let start = Instant::now();
    let started_at = harness::report::utc_rfc3339(std::time::SystemTime::now());
    let files = select(req)?;
    let jobs = req.jobs.clamp(1, files.len().max(1));
    // Two cores, two workers: each libtorch and each worker gets its share of the threads.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = (cores / jobs).max(1);
    if jobs > 1 {
        tch::set_num_threads(threads as i32);
    }
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; files.len()]);
    let on_case = Mutex::new(on_case);
    let versions: Mutex<(String, String)> = Mutex::new((String::new(), String::new()));
    let stopped = AtomicBool::new(false);
    let probe_service = ProbeService::start();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..jobs {
            let mut options = req.options.clone();
            options.torch_threads = (jobs > 1).then_some(threads);
            let mut runner = Runner::with_probe_service(options, probe_service.clone())?;
            let (next, slots, on_case, versions, stopped, files) =
                (&next, &slots, &on_case, &versions, &stopped, &files);
            handles.push(scope.spawn(move || {
                let deliver = |runner: &Runner, i: usize, (result, python): Finished| {
                    if result.status == CaseStatus::Interrupted {
                        stopped.store(true, Ordering::SeqCst);
                    }
                    {
                        let mut v = versions.lock().unwrap_or_else(|e| e.into_inner());
                        if v.0.is_empty() && !runner.torch.is_empty() {
                            v.0 = runner.torch.clone();
                        }
                        if v.1.is_empty() {
                            v.1 = python.unwrap_or_else(|| runner.python.clone());
                        }
                    }
                    (on_case.lock().unwrap_or_else(|e| e.into_inner()))(&result);
                    slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                };
                // Cases waiting only for their device probe, finished as their probes answer
                // (and all of them before the job ends).
                let mut parked: Vec<(usize, Box<Parked>, &Path)> = Vec::new();
                loop {
                    let mut k = 0;
                    while k < parked.len() {
                        if parked[k].1.ready() {
                            let (i, p, file) = parked.remove(k);
                            let finished = finish_one(req, &mut runner, file, *p);
                            deliver(&runner, i, finished);
                        } else {
                            k += 1;
                        }
                    }
                    if harness::interrupt::requested() || stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(file) = files.get(i) else { break };
                    match start_one(req, &mut runner, file) {
                        Started::Done(finished) => deliver(&runner, i, finished),
                        Started::Parked(p) => parked.push((i, p, file)),
                    }
                }
                for (i, p, file) in parked {
                    let finished = finish_one(req, &mut runner, file, *p);
                    deliver(&runner, i, finished);
                }
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a job panicked"))?;
        }
        Ok(())
    })?;
    let slots = slots.into_inner().unwrap_or_else(|e| e.into_inner());
    let complete = slots.iter().all(Option::is_some)
        && !slots
            .iter()
            .flatten()
            .any(|c| c.status == CaseStatus::Interrupted);
    let cases: Vec<CaseResult> = slots.into_iter().flatten().collect();
    let (torch, python) = versions.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(results(
        req,
        (start, started_at),
        torch,
        python,
        complete,
        cases,
    ))
}

/// A case file after [`start_one`].
// Moved once per case: the size of a result does not matter.
#[allow(clippy::large_enum_variant)]
enum Started {
    Done(Finished),
    /// Run, but its device probe is still running: [`finish_one`] completes it.
    Parked(Box<Parked>),
}

/// Start a case file: a cache hit or a case error is done at once; a case that runs may be
/// set aside to wait for its device probe.
fn start_one(req: &Request, runner: &mut Runner, file: &Path) -> Started {
    let case = match Case::load(file) {
        Ok(case) => case,
        Err(e) => {
            let error = ErrorBody::new(ErrorKind::CaseFile, e.to_string());
            return Started::Done((
                CaseResult::error(&stem(file), &file.display().to_string(), error),
                None,
            ));
        }
    };
    if let Some(hit) = cached(req, file, &case) {
        return Started::Done(hit);
    }
    match runner.start_case(&case) {
        Step::Done(result) => Started::Done(stored(req, (&runner.torch, &runner.python), file, &case, result)),
        Step::Parked(p) => Started::Parked(p),
    }
}

/// Finish a case [`start_one`] set aside.
fn finish_one(req: &Request, runner: &mut Runner, file: &Path, parked: Parked) -> Finished {
    let case = parked.case().clone();
    let result = runner.finish_case(parked);
    stored(req, (&runner.torch, &runner.python), file, &case, result)
}

