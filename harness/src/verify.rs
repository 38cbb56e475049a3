//! `verify`: find case files, parse them, run each, check its `.code` snapshots, collect
//! results.json.
//!
//! A case file that does not parse becomes a case error and the run goes on with the others;
//! only a broken environment (no Python worker at all) stops the run. After each case runs, its
//! variants' `.code` (from the result, never from the worker) is normalized, each variant's
//! diffed against its diff base's, and checked against the stored snapshots. Each job takes
//! cases from a shared queue; a case waiting only for its device probe is parked and finished as
//! the probe answers (all before the job ends). [`from_cache`] serves a run whose every case is
//! cached without starting anything (what `harness` does before handing a run to
//! `harness-run`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cache::{Cache, KeyParts};
use crate::case::{self, Case, ModelOrigin, Variant};
use crate::error::{ErrorBody, ErrorKind};
use crate::options::Options;
use crate::results::{CaseResult, CaseStatus, CodeDiff, Results, SCHEMA};
use crate::snapshot::{self, Header, Normalizer, Policy};

#[derive(Debug, Clone)]
pub struct Request {
    /// Case files and folders.
    pub paths: Vec<PathBuf>,
    /// Only cases whose name matches.
    pub filter: Option<regex::Regex>,
    pub options: Options,
    /// Check `.code` snapshots there (`None`: no snapshot checks). Replays never check them.
    pub snapshots: Option<Policy>,
    /// Reuse results of unchanged cases (`None`: run everything). Replays never use it.
    pub cache: Option<Cache>,
    /// Cases run at once, each with its own worker (at least 1).
    pub jobs: usize,
    /// `(k, n)`: only the k-th of n deterministic parts of the selected cases (1-based).
    pub shard: Option<(usize, usize)>,
}

impl Request {
    /// A request with no snapshot checks, no cache, one job and no sharding.
    pub fn new(paths: Vec<PathBuf>, options: Options) -> Request {
        Request {
            paths,
            filter: None,
            options,
            snapshots: None,
            cache: None,
            jobs: 1,
            shard: None,
        }
    }
}

/// The results document of a run that started at `start` (`started_at` in UTC); `torch` is the
/// worker's version, or empty when no worker started (the version tch links is said then).
pub fn results(
    req: &Request,
    (start, started_at): (Instant, String),
    torch: String,
    python: String,
    complete: bool,
    cases: Vec<CaseResult>,
) -> Results {
    Results {
        schema: SCHEMA,
        harness: env!("CARGO_PKG_VERSION").into(),
        torch: if torch.is_empty() {
            crate::TORCH_VERSION.into()
        } else {
            torch
        },
        tch: crate::TCH_VERSION.into(),
        libtorch: None,
        python,
        seed: req.options.seed,
        duration_ms: start.elapsed().as_millis() as u64,
        started_at: Some(started_at),
        root: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
        complete,
        cases,
    }
}

/// What the worker that ran a case said of itself: versions, and the folders its installed
/// libraries live in.
#[derive(Debug, Clone, Copy)]
pub struct WorkerFacts<'a> {
    pub torch: &'a str,
    pub python: &'a str,
    pub site: &'a [PathBuf],
}

/// A finished case, and the Python version a cache hit recorded.
pub type Finished = (CaseResult, Option<String>);

/// The case's result from the cache, if nothing it depends on changed (never for a replay),
/// with its `.code` checked against the snapshots again (they may have been accepted or edited
/// since).
pub fn cached(req: &Request, file: &Path, case: &Case) -> Option<Finished> {
    let replay = req.options.replay.is_some();
    let cache = req.cache.as_ref().filter(|_| !replay)?;
    let hit = cache.lookup(file, &key_parts(req, case)?, &req.options.out_dir)?;
    let mut result = hit.result;
    for v in result.variants.values_mut() {
        v.snapshot = None;
    }
    let policy = req.snapshots.as_ref().filter(|_| !replay);
    check_code(case, &mut result, policy, crate::TORCH_VERSION);
    Some((result, Some(hit.python_version)))
}

/// A run whose every selected case comes from the cache, without Python or libtorch; `None`
/// when any case would run (or fail to parse: the full run reports it), before `on_case` is
/// called for any.
pub fn from_cache(
    req: &Request,
    on_case: &mut dyn FnMut(&CaseResult),
) -> anyhow::Result<Option<Results>> {
    let start = Instant::now();
    let started_at = crate::report::utc_rfc3339(std::time::SystemTime::now());
    let mut cases = Vec::new();
    let mut python = None;
    for file in select(req)? {
        let Ok(case) = load_case(req, &file) else {
            return Ok(None);
        };
        let Some((result, hit_python)) = cached(req, &file, &case) else {
            return Ok(None);
        };
        python = python.or(hit_python);
        cases.push(result);
    }
    cases.iter().for_each(&mut *on_case);
    let python = python.unwrap_or_default();
    Ok(Some(results(
        req,
        (start, started_at),
        String::new(),
        python,
        true,
        cases,
    )))
}

/// A case that ran: cached (unless replayed), its code checked against the snapshots.
pub fn stored(
    req: &Request,
    worker: WorkerFacts<'_>,
    file: &Path,
    case: &Case,
    mut result: CaseResult,
) -> Finished {
    let replay = req.options.replay.is_some();
    let mut watch = crate::timeline::Stopwatch::new();
    if let Some(c) = req.cache.as_ref().filter(|_| !replay) {
        let mut deps: Vec<PathBuf> = result.sources.iter().map(PathBuf::from).collect();
        let stored = case.named_files().and_then(|named| {
            deps.extend(named);
            let parts = key_parts(req, case).ok_or("its device is not known")?;
            c.store(file, &parts, &result, &deps, &worker)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = stored {
            result.notes.push(format!("not cached: {e}"));
        }
        watch.lap("cache");
    }
    let policy = req.snapshots.as_ref().filter(|_| !replay);
    check_code(case, &mut result, policy, worker.torch);
    watch.lap("snapshot");
    add_phases(&mut result, watch.phases);
    (result, None)
}

/// Phases timed after the engine closed the case's timeline: they join it, and its duration.
fn add_phases(result: &mut CaseResult, phases: Vec<crate::timeline::PhaseTime>) {
    let other = result
        .timeline
        .iter()
        .position(|p| p.phase == crate::timeline::OTHER)
        .map(|i| result.timeline.remove(i));
    let ms: f64 = phases.iter().map(|p| p.ms).sum();
    result.duration_ms += ms.round() as u64;
    for p in phases {
        crate::timeline::add(&mut result.timeline, &p.phase, p.ms);
    }
    result.timeline.extend(other);
}

/// The cache key's parts besides the files: the run's options, the variants the case runs
/// (which the project and `--variants` choose, not only its file) and its device; `None` when
/// the device is not known here (`auto` or `cuda` in `harness`, which has no libtorch: the case
/// goes to `harness-run`, which knows).
fn key_parts<'a>(req: &'a Request, case: &'a Case) -> Option<KeyParts<'a>> {
    let device = req.options.device.resolve(&case.spec.check).ok()??;
    Some(KeyParts {
        device: device.as_str(),
        python: &req.options.python,
        seed: req.options.seed,
        timeout_s: req.options.timeout.map(|t| t.as_secs_f64()),
        max_elements: req.options.max_elements,
        roots: &req.options.python_path,
        variants: &case.variants,
    })
}

/// The case files a request selects, in run order: discovered, filtered, then sharded (shard k
/// of n takes every n-th file of the sorted list, starting with the k-th, so shards are
/// disjoint, cover everything and stay balanced).
pub fn select(req: &Request) -> anyhow::Result<Vec<PathBuf>> {
    let files = case::discover(&req.paths).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(files
        .into_iter()
        .filter(|f| match &req.filter {
            Some(re) => re.is_match(&case::case_name(&req.paths, f)),
            None => true,
        })
        .enumerate()
        .filter(|(i, _)| match req.shard {
            Some((k, n)) => i % n == k - 1,
            None => true,
        })
        .map(|(_, f)| f)
        .collect())
}

/// `k/n` with 1 <= k <= n.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected k/n, such as 1/4"))?;
    let k: usize = k
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: k is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: n is not a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("`{s}`: expected 1 <= k <= n"));
    }
    Ok((k, n))
}

/// The `.code` diff of the case's variants and each variant's snapshot, from the `.code` in
/// `result`.
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
    let bodies: Vec<(Variant, Option<String>)> =
        case.variants.iter().map(|&v| (v, code(v))).collect();
    set_code_diffs(result, &bodies);
    let Some(policy) = policy else { return };
    let root = snapshot::workspace_root(&policy.dir);
    let model = result
        .model
        .as_ref()
        .map(|m| format!("{}:{}", m.origin, m.entry))
        .unwrap_or_default();
    for (variant, body) in bodies {
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
        )
        .on_device(result.device.as_deref());
        match snapshot::check(policy, &header, body.as_deref()) {
            Ok(info) => vr.snapshot = Some(info),
            Err(message) => {
                result.status = CaseStatus::Error;
                result.error = Some(ErrorBody::new(ErrorKind::Snapshot, message));
                return;
            }
        }
    }
}

/// Each variant's `code_diff` against its base, and the case's `code_diff`: the first of them
/// (in definition order), as results.json has always kept it.
fn set_code_diffs(result: &mut CaseResult, bodies: &[(Variant, Option<String>)]) {
    let diffs = code_diffs(bodies);
    result.code_diff = diffs.first().map(|(_, d)| d.diff.clone());
    for (v, r) in result.variants.iter_mut() {
        r.code_diff = diffs.iter().find(|(w, _)| w == v).map(|(_, d)| d.clone());
    }
}

/// The unified diff of each variant (in definition order) that has a `diff_base` among the
/// case's variants against that base, both with code.
fn code_diffs(bodies: &[(Variant, Option<String>)]) -> Vec<(Variant, CodeDiff)> {
    let body = |v: Variant| bodies.iter().find(|(w, _)| *w == v)?.1.as_deref();
    bodies
        .iter()
        .filter_map(|(v, text)| {
            let base = v.diff_base()?;
            let (from, to) = (body(base)?, text.as_deref()?);
            let diff = snapshot::unified_diff(from, to, base.as_str(), v.as_str());
            Some((
                *v,
                CodeDiff {
                    diff_base: base,
                    diff,
                },
            ))
        })
        .collect()
}

/// A case file loaded under its identity (see [`case::case_name`]), with the project's roots and
/// the variants the project and the run choose.
pub fn load_case(req: &Request, file: &Path) -> Result<Case, case::CaseError> {
    let o = &req.options;
    let mut case = Case::load_under(file, &o.python_path, &o.variants)?;
    case.name = case::case_name(&req.paths, file);
    Ok(case)
}

/// A case file's identity, for a result whose case could not be loaded.
pub fn name_of(req: &Request, file: &Path) -> String {
    case::case_name(&req.paths, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(s: &str, expect: Result<(usize, usize), &str>) {
        assert_eq!(parse_shard(s), expect.map_err(str::to_string));
    }

    #[test]
    fn shards_parse() {
        check("1/4", Ok((1, 4)));
        check("4/4", Ok((4, 4)));
        check("0/4", Err("`0/4`: expected 1 <= k <= n"));
        check("5/4", Err("`5/4`: expected 1 <= k <= n"));
        check("2", Err("`2`: expected k/n, such as 1/4"));
        check("a/2", Err("`a/2`: k is not a number"));
    }

    fn options(out: &Path, variants: case::VariantChoice) -> Options {
        Options {
            python: "python3".into(),
            out_dir: out.into(),
            seed: None,
            timeout: None,
            max_elements: None,
            replay: None,
            torch_threads: None,
            python_path: Vec::new(),
            variants,
            device: Default::default(),
        }
    }

    /// A folder with one case file (`c.yaml`) and its model.
    fn one_case() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.py"), "class M: pass\n").unwrap();
        let file = dir.path().join("c.yaml");
        let text = "model: {source: m.py, entry: M}\ninputs: [{name: x, shape: [2]}]\n";
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    /// Store `result` for the case as a run of `req` would, with no note (it was cached).
    fn store(req: &Request, file: &Path, result: CaseResult) {
        let case = load_case(req, file).unwrap();
        let worker = WorkerFacts {
            torch: crate::TORCH_VERSION,
            python: "3.11",
            site: &[],
        };
        let (stored_result, _) = stored(req, worker, file, &case, result);
        assert!(stored_result.notes.is_empty(), "{:?}", stored_result.notes);
    }

    /// A result stored for the variants one choice runs is not served to another.
    #[test]
    fn the_cache_keys_on_the_variants_a_case_runs() {
        let (dir, file) = one_case();
        let request = |run: &[&str], project: &[&str]| {
            // As the project file and `--variants` give them: checked, in definition order.
            let names = |n: &[&str]| -> Option<Vec<Variant>> {
                let chosen = n.iter().map(|n| Variant::named(n).unwrap()).collect();
                (!n.is_empty()).then(|| Variant::choice(chosen).unwrap())
            };
            let choice = case::VariantChoice {
                project: names(project),
                run: names(run),
            };
            let mut req = Request::new(vec![file.clone()], options(dir.path(), choice));
            req.cache = Some(Cache {
                dir: dir.path().join("cache"),
            });
            req
        };
        let defaults = request(&[], &[]);
        let case = load_case(&defaults, &file).unwrap();
        let mut result = crate::results::CaseResult::ran_for_test("c");
        for &v in &case.variants {
            let pass = crate::results::VariantResult::for_test(crate::results::Outcome::Pass);
            result.variants.insert(v, pass);
        }
        store(&defaults, &file, result);
        let hit = |req: &Request| cached(req, &file, &load_case(req, &file).unwrap()).is_some();
        assert!(hit(&defaults));
        // The same variants, however chosen, hit; others miss.
        assert!(hit(&request(&["scripted", "traced"], &[])));
        assert!(hit(&request(&[], &["traced", "scripted"])));
        assert!(!hit(&request(&["scripted"], &[])));
        assert!(!hit(&request(&[], &["traced", "scripted", "frozen"])));
    }

    /// A verdict made on one device never answers for another, and `harness` (which cannot
    /// tell whether there is a GPU) serves `auto` and `cuda` runs from no cache at all.
    #[test]
    fn the_cache_keys_on_the_device_a_case_ran_on() {
        use crate::case::DeviceChoice::{Auto, Cpu, Cuda};
        let (dir, file) = one_case();
        let request = |run, cuda| {
            let mut opts = options(dir.path(), Default::default());
            opts.device = crate::options::DeviceSetting {
                project: None,
                run: Some(run),
                cuda,
            };
            let mut req = Request::new(vec![file.clone()], opts);
            req.cache = Some(Cache {
                dir: dir.path().join("cache"),
            });
            req
        };
        let on_gpu = request(Cuda, Some(true));
        store(
            &on_gpu,
            &file,
            crate::results::CaseResult::ran_for_test("c"),
        );
        let hit = |req: &Request| cached(req, &file, &load_case(req, &file).unwrap()).is_some();
        assert!(hit(&on_gpu));
        assert!(
            hit(&request(Auto, Some(true))),
            "auto on a GPU machine runs on CUDA"
        );
        assert!(!hit(&request(Cpu, Some(true))));
        assert!(
            !hit(&request(Auto, Some(false))),
            "auto without a GPU runs on the CPU"
        );
        assert!(
            !hit(&request(Cuda, None)),
            "harness cannot tell: harness-run decides"
        );
        assert!(!hit(&request(Auto, None)));
    }

    /// A case of `variants` whose results hold these `.code` texts (`None`: no code), after
    /// `check_code` without snapshots.
    fn code_checked(variants: &str, codes: &[(&str, Option<&str>)]) -> CaseResult {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.py"), "class M: pass\n").unwrap();
        let file = dir.path().join("c.yaml");
        let text = format!(
            "model: {{source: m.py, entry: M}}\ninputs: [{{name: x, shape: [2]}}]\n\
             variants: [{variants}]\n"
        );
        std::fs::write(&file, text).unwrap();
        let req = Request::new(vec![file.clone()], options(dir.path(), Default::default()));
        let case = load_case(&req, &file).unwrap();
        let mut result = crate::results::CaseResult::ran_for_test("c");
        for (name, code) in codes {
            let mut v = crate::results::VariantResult::for_test(crate::results::Outcome::Pass);
            v.export.code = code.map(str::to_string);
            result.variants.insert(Variant::named(name).unwrap(), v);
        }
        check_code(&case, &mut result, None, crate::TORCH_VERSION);
        result
    }

    /// Each variant is diffed against its own base (frozen against scripted, not traced); the
    /// case's `code_diff` stays the first pair's.
    #[test]
    fn each_variant_is_diffed_against_its_base() {
        let all = "traced, scripted, frozen";
        let diff = |r: &CaseResult, v: &str| {
            let d = r.variants[&Variant::named(v).unwrap()].code_diff.clone();
            d.map(|d| format!("{}: {}", d.diff_base, d.diff))
        };
        let r = code_checked(
            all,
            &[
                ("traced", Some("a\n")),
                ("scripted", Some("b\n")),
                ("frozen", Some("c\n")),
            ],
        );
        assert_eq!(diff(&r, "traced"), None);
        let scripted = "--- traced\n+++ scripted\n@@ -1 +1 @@\n-a\n+b\n";
        assert_eq!(diff(&r, "scripted"), Some(format!("traced: {scripted}")));
        assert_eq!(
            diff(&r, "frozen").as_deref(),
            Some("scripted: --- scripted\n+++ frozen\n@@ -1 +1 @@\n-b\n+c\n")
        );
        assert_eq!(r.code_diff.as_deref(), Some(scripted));
        // The same code: an empty diff; a base without code: no diff, and no case diff.
        let r = code_checked(
            all,
            &[
                ("traced", None),
                ("scripted", Some("b")),
                ("frozen", Some("b")),
            ],
        );
        assert_eq!(diff(&r, "scripted"), None);
        assert_eq!(diff(&r, "frozen").as_deref(), Some("scripted: "));
        assert_eq!(r.code_diff.as_deref(), Some(""));
        let r = code_checked(
            all,
            &[
                ("traced", Some("a")),
                ("scripted", None),
                ("frozen", Some("b")),
            ],
        );
        assert!(r.variants.values().all(|v| v.code_diff.is_none()));
        assert_eq!(r.code_diff, None);
        // A base the case does not run: no diff.
        let r = code_checked(
            "traced, frozen",
            &[("traced", Some("a")), ("frozen", Some("b"))],
        );
        assert!(r.variants.values().all(|v| v.code_diff.is_none()));
    }

    #[test]
    fn shards_partition_the_cases() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..7 {
            std::fs::write(dir.path().join(format!("c{i}.yaml")), "").unwrap();
        }
        let options = options(dir.path(), Default::default());
        let all = select(&Request::new(vec![dir.path().into()], options.clone())).unwrap();
        let mut union = Vec::new();
        for k in 1..=3 {
            let req = Request {
                shard: Some((k, 3)),
                ..Request::new(vec![dir.path().into()], options.clone())
            };
            let part = select(&req).unwrap();
            assert!(part.len() >= 2 && part.len() <= 3, "{part:?}");
            union.extend(part);
        }
        union.sort();
        assert_eq!(union, all);
    }
}
