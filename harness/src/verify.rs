//! `verify`: find case files, parse them, run each, collect results.json.
//!
//! A case file that does not parse becomes a case error and the run goes on with the others;
//! only a broken environment (no Python worker at all) stops the run.

use std::path::PathBuf;
use std::time::Instant;

use crate::case::{self, Case};
use crate::results::{CaseResult, Results, SCHEMA};
use crate::run::{Options, Runner};
use crate::worker::ErrorBody;

#[derive(Debug, Clone)]
pub struct Request {
    /// Case files and folders.
    pub paths: Vec<PathBuf>,
    /// Only cases whose name matches.
    pub filter: Option<regex::Regex>,
    pub options: Options,
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
            Ok(case) => runner.run_case(&case),
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
        let stopped = result.status == crate::results::CaseStatus::Interrupted;
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

fn stem(f: &std::path::Path) -> String {
    f.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}
