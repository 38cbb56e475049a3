//! Running the selected cases in libtorch: `N` jobs, each with its own runner and worker, take
//! case files from a shared queue; a case waiting only for its device probe is parked (the job
//! keeps its `CaseRun`) and finished as the probe answers, all before the job ends. Each case
//! runs under `catch_unwind`: a panic (tch panics on some libtorch exceptions) becomes that
//! case's `internal` error, and the run, and its results.json, go on. Everything before and after
//! a case runs (selection, the cache, snapshot checks, the results document) is the core crate's
//! `verify`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use harness::case::DeviceChoice;
use harness::error::{ErrorBody, ErrorKind};
use harness::probe::ProbeService;
use harness::results::{CaseResult, CaseStatus, Results};
use harness::verify::{cached, load_case, name_of, results, select, stored, Finished, Request};

use crate::run::{CaseRun, Runner, Step};

/// What the jobs share: the case files, the queue position, the finished results in case order,
/// the versions the workers reported, and whether the run was interrupted.
struct Shared<'a, F> {
    req: &'a Request,
    files: Vec<PathBuf>,
    next: AtomicUsize,
    slots: Mutex<Vec<Option<CaseResult>>>,
    on_case: Mutex<F>,
    versions: Mutex<(String, String)>,
    stopped: AtomicBool,
}

/// Run every selected case, calling `on_case` as each one finishes (from the job's thread).
pub fn verify(req: &Request, on_case: impl FnMut(&CaseResult) + Send) -> anyhow::Result<Results> {
    let start = Instant::now();
    let started_at = harness::report::utc_rfc3339(std::time::SystemTime::now());
    let req = &on_this_machine(req)?;
    let files = select(req)?;
    let jobs = req.jobs.clamp(1, files.len().max(1));
    // Two cores, two workers: each libtorch and each worker gets its share of the threads.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / jobs).max(1);
    if jobs > 1 {
        tch::set_num_threads(threads as i32);
    }
    let shared = Shared {
        req,
        slots: Mutex::new(vec![None; files.len()]),
        files,
        next: AtomicUsize::new(0),
        on_case: Mutex::new(on_case),
        versions: Mutex::new((String::new(), String::new())),
        stopped: AtomicBool::new(false),
    };
    let probe = ProbeService::start();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..jobs {
            let mut options = req.options.clone();
            options.torch_threads = (jobs > 1).then_some(threads);
            let runner = Runner::with_probe_service(options, probe.clone())?;
            let shared = &shared;
            handles.push(scope.spawn(move || job(shared, runner)));
        }
        for h in handles {
            // A job catches its cases' panics; one that still panicked lost no finished result.
            let _ = h.join();
        }
        Ok(())
    })?;
    let slots = shared.slots.into_inner().unwrap_or_else(|e| e.into_inner());
    let complete = slots.iter().all(Option::is_some)
        && !slots
            .iter()
            .flatten()
            .any(|c| c.status == CaseStatus::Interrupted);
    let cases: Vec<CaseResult> = slots.into_iter().flatten().collect();
    let (torch, python) = shared
        .versions
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let mut results = results(req, (start, started_at), torch, python, complete, cases);
    results.libtorch = Some(crate::libtorch::VERSION.into());
    Ok(results)
}

/// The request as this machine can serve it: whether libtorch sees a GPU is known now (it
/// decides `auto`, and keys the cache), and on a GPU machine libtorch gets exact numerics (no
/// TF32, deterministic cuDNN), as the worker gives a CUDA case's eager. `--device cuda` where
/// there is no GPU is one error for the whole run, before any case starts.
fn on_this_machine(req: &Request) -> anyhow::Result<Request> {
    let mut req = req.clone();
    let cuda = crate::libtorch::cuda_usable();
    req.options.device.cuda = Some(cuda);
    if req.options.device.run == Some(DeviceChoice::Cuda) && !cuda {
        let linked = if crate::libtorch::CUDA_LINKED {
            "libtorch_cuda is linked"
        } else {
            "this libtorch has no CUDA"
        };
        anyhow::bail!("--device cuda: {} ({linked})", harness::options::NO_CUDA);
    }
    if cuda {
        crate::libtorch::set_exact_numerics(true);
    } else if [req.options.device.run, req.options.device.project]
        .contains(&Some(DeviceChoice::Auto))
    {
        // On stderr: the run's lines and results stay those of a CPU run (each case records it).
        eprintln!(
            "harness: device auto: libtorch sees no CUDA device here, so cases run on the CPU"
        );
    }
    Ok(req)
}

/// One job: take cases from the queue until it is empty or the run stops; finish parked cases
/// as their probes answer, and all of them before returning.
fn job<F: FnMut(&CaseResult) + Send>(shared: &Shared<'_, F>, mut runner: Runner) {
    let mut parked: Vec<(usize, Box<CaseRun>)> = Vec::new();
    loop {
        let mut k = 0;
        while k < parked.len() {
            if parked[k].1.ready() {
                let (i, cx) = parked.remove(k);
                finish(shared, &mut runner, i, cx);
            } else {
                k += 1;
            }
        }
        if harness::interrupt::requested() || shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        let Some(file) = shared.files.get(i) else {
            break;
        };
        match guarded(&name_of(shared.req, file), file, || {
            start_one(shared.req, &mut runner, file)
        }) {
            Ok(Started::Done(finished)) => deliver(shared, &runner, i, finished),
            Ok(Started::Parked(cx)) => parked.push((i, cx)),
            Err(finished) => {
                runner.forget_worker();
                deliver(shared, &runner, i, finished)
            }
        }
    }
    for (i, cx) in parked {
        finish(shared, &mut runner, i, cx);
    }
}

fn finish<F: FnMut(&CaseResult) + Send>(
    shared: &Shared<'_, F>,
    runner: &mut Runner,
    i: usize,
    cx: Box<CaseRun>,
) {
    let file = shared.files[i].clone();
    let finished = guarded(&name_of(shared.req, &file), &file, || {
        finish_one(shared.req, runner, &file, *cx)
    })
    .unwrap_or_else(|f| {
        runner.forget_worker();
        f
    });
    deliver(shared, runner, i, finished);
}

/// Run one step of a case, turning a panic into that case's `internal` error.
fn guarded<T>(name: &str, file: &Path, f: impl FnOnce() -> T) -> Result<T, Finished> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        let error = ErrorBody::new(
            ErrorKind::Internal,
            format!("the harness panicked on this case: {what}"),
        );
        (
            CaseResult::error(name, &file.display().to_string(), error),
            None,
        )
    })
}

/// Record a finished case: its slot, the versions, the caller's callback.
fn deliver<F: FnMut(&CaseResult) + Send>(
    shared: &Shared<'_, F>,
    runner: &Runner,
    i: usize,
    (result, python): Finished,
) {
    if result.status == CaseStatus::Interrupted {
        shared.stopped.store(true, Ordering::SeqCst);
    }
    {
        let mut v = shared.versions.lock().unwrap_or_else(|e| e.into_inner());
        if v.0.is_empty() && !runner.torch.is_empty() {
            v.0 = runner.torch.clone();
        }
        if v.1.is_empty() {
            v.1 = python.unwrap_or_else(|| runner.python.clone());
        }
    }
    (shared.on_case.lock().unwrap_or_else(|e| e.into_inner()))(&result);
    shared.slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
}

/// A case file after [`start_one`].
// Moved once per case: the size of a result does not matter.
#[allow(clippy::large_enum_variant)]
enum Started {
    Done(Finished),
    /// Run, but its device probe is still running: [`finish_one`] completes it.
    Parked(Box<CaseRun>),
}

/// Start a case file: a cache hit or a case error is done at once; a case that runs may be
/// set aside to wait for its device probe.
fn start_one(req: &Request, runner: &mut Runner, file: &Path) -> Started {
    let case = match load_case(req, file) {
        Ok(case) => case,
        Err(e) => {
            let error = ErrorBody::new(ErrorKind::CaseFile, e.to_string());
            return Started::Done((
                CaseResult::error(&name_of(req, file), &file.display().to_string(), error),
                None,
            ));
        }
    };
    if let Some(hit) = cached(req, file, &case) {
        return Started::Done(hit);
    }
    match runner.start_case(&case) {
        Step::Done(result) => Started::Done(stored(req, runner.facts(), file, &case, result)),
        Step::Parked(p) => Started::Parked(p),
    }
}

/// Finish a case [`start_one`] set aside.
fn finish_one(req: &Request, runner: &mut Runner, file: &Path, cx: CaseRun) -> Finished {
    let case = cx.case.clone();
    let result = runner.finish_case(cx);
    stored(req, runner.facts(), file, &case, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_the_cases_internal_error() {
        let file = Path::new("cases/odd_output.yaml");
        let (result, python) = guarded("odd_output", file, || -> Finished {
            panic!("called `Result::unwrap()` on an `Err` value: Torch(\"odd\")")
        })
        .unwrap_err();
        assert_eq!(result.name, "odd_output");
        assert_eq!(result.status, CaseStatus::Error);
        let error = result.error.unwrap();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(error
            .message
            .starts_with("the harness panicked on this case: called"));
        assert!(python.is_none());
        assert_eq!(guarded("odd_output", file, || 3).ok(), Some(3));
    }
}
