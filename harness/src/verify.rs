//! `verify`: find case files, parse them, run each, check its `.code` snapshots, collect
//! results.json.
//!
//! A case file that does not parse becomes a case error and the run goes on with the others;
//! only a broken environment (no Python worker at all) stops the run. After each case runs, its
//! variants' `.code` (from the result, never from the worker) is normalized, diffed traced
//! against scripted, and checked against the stored snapshots.

use std::path::PathBuf;
use std::time::Instant;

use crate::case::{self, Case, ModelOrigin, Variant};
use crate::results::{CaseResult, CaseStatus, Results, SCHEMA};
use crate::run::{Options, Runner};
use crate::snapshot::{self, Header, Normalizer, Policy};
use crate::worker::ErrorBody;

#[derive(Debug, Clone)]
pub struct Request {
    /// Case files and folders.
    pub paths: Vec<PathBuf>,
    /// Only cases whose name matches.
    pub filter: Option<regex::Regex>,
    pub options: Options,
    /// Check `.code` snapshots there (`None`: no snapshot checks). Replays never check them.
    pub snapshots: Option<Policy>,
}

/// Run every selected case, calling `on_case` as each one finishes.
pub fn verify(req: &Request, mut on_case: impl FnMut(&CaseResult)) -> anyhow::Result<Results> {
    let start = Instant::now();
    let started_at = crate::report::utc_rfc3339(std::time::SystemTime::now());
    let files = select(req)?;
    let mut runner = Runner::new(req.options.clone()).map_err(|e| {
        anyhow::anyhow!("{e} (is the virtual environment set up? `cargo xtask verify` makes it)")
    })?;
    let mut cases = Vec::with_capacity(files.len());
    let mut complete = true;
    for file in &files {
        if crate::interrupt::requested() {
            complete = false;
            break;
        }
        let result = match Case::load(file) {
            Ok(case) => {
                let mut result = runner.run_case(&case);
                let policy = req
                    .snapshots
                    .as_ref()
                    .filter(|_| req.options.replay.is_none());
                check_code(&case, &mut result, policy, &runner.torch);
                result
            }
            Err(e) => CaseResult::error(
                &stem(file),
                &file.display().to_string(),
                ErrorBody {
                    kind: "case_file".into(),
                    message: e.to_string(),
                    traceback: Vec::new(),
                    file: None,
                    line: None,
                    source_line: None,
                },
            ),
        };
        on_case(&result);
        let stopped = result.status == CaseStatus::Interrupted;
        cases.push(result);
        if stopped {
            complete = false;
            break;
        }
    }
    Ok(Results {
        schema: SCHEMA,
        harness: env!("CARGO_PKG_VERSION").into(),
        torch: runner.torch.clone(),
        tch: crate::TCH_VERSION.into(),
        python: runner.python.clone(),
        seed: req.options.seed,
        duration_ms: start.elapsed().as_millis() as u64,
        started_at: Some(started_at),
        complete,
        cases,
    })
}

/// The case files a request selects, in run order.
pub fn select(req: &Request) -> anyhow::Result<Vec<PathBuf>> {
    let files = case::discover(&req.paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(files
        .into_iter()
        .filter(|f| match &req.filter {
            Some(re) => re.is_match(&stem(f)),
            None => true,
        })
        .collect())
}

/// The traced-versus-scripted diff and each variant's snapshot, from the `.code` in `result`.
/// A snapshot file that cannot be read or written makes the case a case error.
fn check_code(case: &Case, result: &mut CaseResult, policy: Option<&Policy>, torch: &str) {
    if result.status != CaseStatus::Ran {
        return;
    }
    let model_stem = match &case.origin {
        ModelOrigin::Source(p) => p.file_stem().map(|s| s.to_string_lossy().into_owned()),
        ModelOrigin::Import(_) => None,
    };
    let cwd = std::env::current_dir().ok();
    let normalizer = Normalizer::new(
        case.file.parent().filter(|p| !p.as_os_str().is_empty()),
        cwd.as_deref(),
        model_stem.as_deref(),
    );
    let code = |v: Variant| {
        let export = &result.variants.get(&v)?.export;
        export
            .code
            .as_deref()
            .filter(|_| export.ok)
            .map(|c| snapshot::code_text(&normalizer, c, &export.constants, &export.modules))
    };
    let (traced, scripted) = (code(Variant::Traced), code(Variant::Scripted));
    if let (Some(t), Some(s)) = (&traced, &scripted) {
        result.code_diff = Some(snapshot::code_diff(t, s));
    }
    let Some(policy) = policy else { return };
    let root = snapshot::workspace_root(&policy.dir);
    let model = result
        .model
        .as_ref()
        .map(|m| format!("{}:{}", m.origin, m.entry))
        .unwrap_or_default();
    for (variant, body) in [(Variant::Traced, traced), (Variant::Scripted, scripted)] {
        let Some(vr) = result.variants.get_mut(&variant) else {
            continue;
        };
        let header = Header::new(
            &case.name,
            &case.file,
            root.as_deref(),
            variant,
            torch,
            &model,
        );
        match snapshot::check(policy, &header, body.as_deref()) {
            Ok(info) => vr.snapshot = Some(info),
            Err(message) => {
                result.status = CaseStatus::Error;
                result.error = Some(ErrorBody {
                    kind: "snapshot".into(),
                    message,
                    traceback: Vec::new(),
                    file: None,
                    line: None,
                    source_line: None,
                });
                return;
            }
        }
    }
}

fn stem(f: &std::path::Path) -> String {
    f.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
