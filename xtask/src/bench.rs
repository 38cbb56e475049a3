//! `cargo xtask bench`: is the harness faster than the plain Python script it replaces?
//!
//! Builds a corpus in `target/bench-corpus/` (the top-level shipped cases and their models, plus
//! generated MLP and convnet cases up to 40; `--quick`: 8), then times, in one run, with the
//! real release binary and the real venv: (a) `harness verify` cold (its result cache emptied,
//! when it has one), (b) the same again with nothing changed, (c) again after appending a comment
//! to a model file only one case uses, and (d) `harness/python/bench_reference.py`, one Python
//! process doing the same trace/script/save/load/forward/compare work on the same samples. (a)
//! and (d) are timed [`TIMED_RUNS`] times each (the median counts) and run once more for their
//! memory: each process tree's peak memory (PSS: shared pages split among the processes sharing
//! them) is sampled from `/proc` every 50 ms, and reading `smaps_rollup` costs about 4 ms per
//! torch process, which would slow the tree being timed. CPU time comes from
//! `getrusage(RUSAGE_CHILDREN)` before and after (less noisy than wall time on a shared machine,
//! though OpenMP threads spinning for a core count as CPU too). The per-case overhead (harness
//! time minus the torch work it timed) comes from the cold run's results.json. It prints a
//! table with the targets of issue 7; a missed target is reported, not a failure: the exit code
//! is non-zero only when a run itself failed. Without `--quick`, the two large corpora follow
//! (`bench_corpora`: the op sweep and the zoo, with issue 16's targets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::env::Env;
use crate::json::Json;

/// Cases in the full corpus.
const FULL: usize = 40;
/// Cases with `--quick` (half shipped, half generated).
const QUICK: usize = 8;
/// Generated samples per case besides the trace input (the harness's default).
const SAMPLES: usize = 24;
/// The generated case whose model file nothing else uses (edited for run (c)).
const EDIT_CASE: &str = "bench_edit_mlp";
const EDIT_MODEL: &str = "models/bench_edit.py";

/// Timed runs of (a) and (d); their median counts.
const TIMED_RUNS: usize = 3;

/// The targets of issue 7.
const COLD_RATIO_MAX: f64 = 0.8;
const WARM_RATIO_MAX: f64 = 0.05;
const OVERHEAD_MS_MAX: f64 = 50.0;
const RSS_MAX: u64 = 3 << 29; // 1.5 GiB

pub fn run(args: &[String]) -> Result<u8, String> {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            _ => {
                return Err(format!(
                    "bench: unknown argument {a:?} (usage: bench [--quick])"
                ))
            }
        }
    }
    let env = Env::prepare()?;
    let bin = env.build_harness()?;
    let corpus_dir = env.root.join("target/bench-corpus");
    let work = env.root.join("target/bench");
    for dir in [&corpus_dir, &work] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    let total = if quick { QUICK } else { FULL };
    let corpus = write_corpus(&env.root.join("cases"), &corpus_dir, total)?;
    eprintln!(
        "bench: corpus of {} cases ({} shipped, {} generated) in {}",
        corpus.cases.len(),
        corpus.shipped,
        corpus.cases.len() - corpus.shipped,
        corpus_dir.display()
    );

    let help = Command::new(&bin)
        .args(["verify", "--help"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let has_cache = String::from_utf8_lossy(&help.stdout).contains("--cache-dir");
    let cache = work.join("cache");

    let load_before = load_average();
    let mut failures = Vec::new();
    let mut harness_run = |label: &str, out: &str, sample: bool| -> Result<Measured, String> {
        let out = work.join(out);
        let mut cmd = Command::new(&bin);
        cmd.arg("verify")
            .arg(&corpus_dir)
            // The reference traces and scripts: the harness checks the same two variants,
            // whatever the repository's harness.toml or a case's own list adds.
            .args(["--variants", "traced,scripted"])
            .args(["--no-snapshots", "--no-baseline", "--out"])
            .arg(&out)
            .arg("--python")
            .arg(env.python());
        if has_cache {
            cmd.arg("--cache-dir").arg(&cache);
        }
        env.apply(&mut cmd);
        cmd.env_remove("CI");
        eprintln!("bench: {label}");
        let m = measure(&mut cmd, &out.with_extension("log"), sample)?;
        if m.code == Some(2) || m.code.is_none() {
            failures.push(format!("{label}: harness exit {:?}", m.code));
        }
        Ok(m)
    };
    let empty_cache = || -> Result<(), String> {
        if has_cache && cache.exists() {
            std::fs::remove_dir_all(&cache).map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let mut timed = Vec::new();
    for i in 1..=TIMED_RUNS {
        empty_cache()?;
        timed.push(harness_run(
            &format!("(a) cold, timed {i}/{TIMED_RUNS}"),
            &format!("a-cold-{i}"),
            false,
        )?);
    }
    // The per-case numbers and the reference's input come from the run of median wall time.
    let mut order: Vec<usize> = (0..timed.len()).collect();
    order.sort_by(|&a, &b| timed[a].wall.cmp(&timed[b].wall));
    let cold_dir = work.join(format!("a-cold-{}", order[order.len() / 2] + 1));
    empty_cache()?;
    let memory = harness_run("(a) cold, for memory", "a-cold-memory", true)?;
    let cold = Measured::median_of(&timed, &memory);
    let warm = harness_run("(b) warm, nothing changed", "b-warm", true)?;
    let edited = corpus_dir.join(EDIT_MODEL);
    let mut text = std::fs::read_to_string(&edited).map_err(|e| e.to_string())?;
    text.push_str("# edited by cargo xtask bench\n");
    std::fs::write(&edited, text).map_err(|e| e.to_string())?;
    let edit = harness_run(&format!("(c) after editing {EDIT_MODEL}"), "c-edit", true)?;

    let cold_results = read_json(&cold_dir.join("results.json"))?;
    let manifest = work.join("reference-manifest.json");
    std::fs::write(
        &manifest,
        reference_manifest(
            &cold_dir.join("results.json"),
            &work.join("reference"),
            &corpus,
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = reference_command(&env, &manifest);
    let mut timed = Vec::new();
    for i in 1..=TIMED_RUNS {
        eprintln!("bench: (d) plain-Python reference, timed {i}/{TIMED_RUNS}");
        timed.push(measure(&mut cmd, &work.join("reference.log"), false)?);
    }
    eprintln!("bench: (d) plain-Python reference, for memory");
    let memory = measure(&mut cmd, &work.join("reference-memory.log"), true)?;
    let reference = Measured::median_of(&timed, &memory);
    if reference.code != Some(0) {
        failures.push(format!("(d) reference: exit {:?}", reference.code));
    }
    let ref_line = std::fs::read_to_string(work.join("reference.log"))
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(|l| l.to_string());
    let ref_json = ref_line.as_deref().map(Json::parse).and_then(Result::ok);

    let edit_results = read_json(&work.join("c-edit/results.json")).ok();
    let summary = Summary {
        rows: vec![
            Row::new("(a) cold verify", &cold),
            Row::new("(b) warm re-run", &warm),
            Row::new("(c) after 1 model edit", &edit),
            Row::new("(d) plain-Python ref", &reference),
        ],
        cache: has_cache,
        reran: edit_results
            .as_ref()
            .and_then(|r| rerun_count(r, has_cache)),
        cases: corpus.cases.len(),
        overhead: overheads(&cold_results),
        reference_torch_s: ref_json
            .as_ref()
            .and_then(|j| j.get("torch_s"))
            .and_then(Json::as_f64),
        load: (load_before, load_average()),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
    };
    println!("{}", summary.render());
    if !quick {
        let large = crate::bench_corpora::run(&env, &bin, &work);
        println!("{}", crate::bench_corpora::render(&large));
        failures.extend(large.iter().filter_map(|l| l.as_ref().err().cloned()));
    }
    // Both sides inherit these; they change libtorch's threads a lot on a busy machine.
    for var in ["OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"] {
        if let Ok(v) = std::env::var(var) {
            println!("(all runs had {var}={v} from the environment)");
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("bench: run failed: {f} (logs in {})", work.display());
        }
        return Ok(2);
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// One generated case: its file name, model file, entry, kwargs and YAML.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFile {
    pub name: String,
    /// Keyword arguments of the entry (for the reference: results.json does not keep them).
    /// Each value as JSON text (`3`, `true`, `null`, `"x"`).
    pub kwargs: Vec<(String, String)>,
    /// `model.eval` (false for the shipped `dropout_train`).
    pub eval: bool,
    /// `None` for a shipped case (copied as is).
    pub yaml: Option<String>,
}

pub struct Corpus {
    pub cases: Vec<CaseFile>,
    pub shipped: usize,
}

/// The shared model file of the generated cases.
pub const MODELS_PY: &str = r#""""Models generated by `cargo xtask bench`: small MLPs and convnets, sized by kwargs."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features=8, hidden=32, depth=2, out_features=4):
        super().__init__()
        layers = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvNet(nn.Module):
    def __init__(self, in_channels=3, channels=8, blocks=2, classes=10):
        super().__init__()
        layers = []
        c = in_channels
        for _ in range(blocks):
            layers += [nn.Conv2d(c, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
            c = channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))
"#;

/// The model file only [`EDIT_CASE`] uses.
pub const EDIT_PY: &str = r#""""The one model file of `cargo xtask bench`'s corpus that a single case uses (run (c) edits it)."""
from torch import nn


class EditMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 3))

    def forward(self, x):
        return self.net(x)
"#;

/// The generated cases, `count` of them: [`EDIT_CASE`] first, then MLPs and convnets
/// alternating, their sizes and dims a fixed function of the index (no randomness).
pub fn generated_cases(count: usize) -> Vec<CaseFile> {
    let mut out = Vec::new();
    if count == 0 {
        return out;
    }
    out.push(CaseFile {
        name: EDIT_CASE.into(),
        kwargs: vec![],
        eval: true,
        yaml: Some(format!(
            "description: generated by cargo xtask bench; the only case using {EDIT_MODEL}\n\
             model: {{source: {EDIT_MODEL}, entry: EditMLP}}\n\
             inputs:\n  - {{name: x, shape: [B, 12]}}\n\
             dims:\n  B: {{trace: 3, min: 1, max: 8}}\n\
             check:\n  samples: {SAMPLES}\n"
        )),
    });
    for i in 0..count - 1 {
        let k = i / 2;
        let case = if i % 2 == 0 {
            let in_features = [4, 8, 16, 32, 64][k % 5];
            let hidden = [16, 32, 64, 128][k % 4];
            let depth = 1 + k % 3;
            let out_features = [2, 4, 10][k % 3];
            let (trace, max) = [(2, 8), (4, 16), (8, 32), (3, 12)][k % 4];
            CaseFile {
                name: format!("bench_mlp_{k:02}"),
                kwargs: vec![
                    ("in_features".into(), in_features.to_string()),
                    ("hidden".into(), hidden.to_string()),
                    ("depth".into(), depth.to_string()),
                    ("out_features".into(), out_features.to_string()),
                ],
                eval: true,
                yaml: Some(format!(
                    "description: generated by cargo xtask bench\n\
                     model:\n  source: models/bench_models.py\n  entry: MLP\n  \
                     kwargs: {{in_features: {in_features}, hidden: {hidden}, depth: {depth}, out_features: {out_features}}}\n\
                     inputs:\n  - {{name: x, shape: [B, {in_features}]}}\n\
                     dims:\n  B: {{trace: {trace}, min: 1, max: {max}}}\n\
                     check:\n  samples: {SAMPLES}\n"
                )),
            }
        } else {
            let in_channels = [1, 3, 3, 4][k % 4];
            let channels = [4, 8, 16][k % 3];
            let blocks = 1 + k % 2;
            let classes = [5, 10][k % 2];
            let (hw_trace, hw_min, hw_max) = [(8, 4, 12), (16, 8, 24), (12, 6, 16)][k % 3];
            let (b_trace, b_max) = [(2, 4), (1, 3), (3, 6)][k % 3];
            CaseFile {
                name: format!("bench_conv_{k:02}"),
                kwargs: vec![
                    ("in_channels".into(), in_channels.to_string()),
                    ("channels".into(), channels.to_string()),
                    ("blocks".into(), blocks.to_string()),
                    ("classes".into(), classes.to_string()),
                ],
                eval: true,
                yaml: Some(format!(
                    "description: generated by cargo xtask bench\n\
                     model:\n  source: models/bench_models.py\n  entry: ConvNet\n  \
                     kwargs: {{in_channels: {in_channels}, channels: {channels}, blocks: {blocks}, classes: {classes}}}\n\
                     inputs:\n  - {{name: x, shape: [B, {in_channels}, H, W]}}\n\
                     dims:\n  B: {{trace: {b_trace}, min: 1, max: {b_max}}}\n  \
                     H: {{trace: {hw_trace}, min: {hw_min}, max: {hw_max}}}\n  \
                     W: {{trace: {hw_trace}, min: {hw_min}, max: {hw_max}}}\n\
                     check:\n  samples: {SAMPLES}\n"
                )),
            }
        };
        out.push(case);
    }
    out
}

/// Whether a case names a file besides its model (a shipped `artifact:`, `model.weights`): the
/// reference has neither a loader for them nor a shipped variant, so the bench leaves it out.
fn names_files(case: &Path) -> bool {
    let text = std::fs::read_to_string(case).unwrap_or_default();
    text.lines()
        .any(|l| l.starts_with("artifact:") || l.trim_start().starts_with("weights:"))
}

/// Copy the shipped top-level cases (sorted; `cases/zoo/` and cases naming other files are
/// left out) and their `models/`, then write the generated cases, `total` in all (`--quick`:
/// half and half).
fn write_corpus(cases: &Path, dir: &Path, total: usize) -> Result<Corpus, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dir.join("models")).map_err(|e| io(dir, e))?;
    let mut shipped: Vec<PathBuf> = std::fs::read_dir(cases)
        .map_err(|e| io(cases, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| !names_files(p))
        .collect();
    shipped.sort();
    let keep = if total <= QUICK {
        total / 2
    } else {
        total.saturating_sub(2)
    };
    shipped.truncate(keep);
    let models = cases.join("models");
    for e in std::fs::read_dir(&models).map_err(|e| io(&models, e))? {
        let p = e.map_err(|e| io(&models, e))?.path();
        if p.is_file() {
            std::fs::copy(&p, dir.join("models").join(p.file_name().unwrap()))
                .map_err(|e| io(&p, e))?;
        }
    }
    let mut out = Vec::new();
    for p in &shipped {
        let text = std::fs::read_to_string(p).map_err(|e| io(p, e))?;
        if text.contains("kwargs:") {
            return Err(format!(
                "bench: {} has model kwargs, which the reference cannot read without a YAML parser",
                p.display()
            ));
        }
        std::fs::write(dir.join(p.file_name().unwrap()), &text).map_err(|e| io(p, e))?;
        out.push(CaseFile {
            name: p.file_stem().unwrap().to_string_lossy().into_owned(),
            kwargs: vec![],
            eval: !text.contains("eval: false"),
            yaml: None,
        });
    }
    let shipped_n = out.len();
    std::fs::write(dir.join("models/bench_models.py"), MODELS_PY).map_err(|e| io(dir, e))?;
    std::fs::write(dir.join(EDIT_MODEL), EDIT_PY).map_err(|e| io(dir, e))?;
    for case in generated_cases(total - shipped_n) {
        let p = dir.join(format!("{}.yaml", case.name));
        std::fs::write(&p, case.yaml.as_deref().unwrap_or_default()).map_err(|e| io(&p, e))?;
        out.push(case);
    }
    Ok(Corpus {
        cases: out,
        shipped: shipped_n,
    })
}

/// The plain-Python reference on a manifest ([`reference_manifest`]).
pub fn reference_command(env: &Env, manifest: &Path) -> Command {
    let mut cmd = Command::new(env.python());
    cmd.arg(env.root.join("harness/python/bench_reference.py"))
        .arg(manifest);
    env.apply(&mut cmd);
    // The same threading as the harness gives itself (it sets a passive OpenMP wait policy
    // unless the environment chose one), so the comparison is of the work, not of spinning.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    cmd
}

/// The reference's input: the cold run's results.json (cases, models, samples, generators),
/// the kwargs and `eval` results.json does not keep, and where to put the artifacts.
pub fn reference_manifest(results: &Path, work: &Path, corpus: &Corpus) -> String {
    let mut cases = Vec::new();
    for c in &corpus.cases {
        let kwargs: Vec<String> = c
            .kwargs
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        cases.push(format!(
            "{}: {{\"kwargs\": {{{}}}, \"eval\": {}}}",
            json_str(&c.name),
            kwargs.join(", "),
            c.eval
        ));
    }
    format!(
        "{{\"results\": {}, \"work\": {}, \"cases\": {{{}}}}}\n",
        json_str(&results.to_string_lossy()),
        json_str(&work.to_string_lossy()),
        cases.join(", ")
    )
}

pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------------------------
// Measuring a process tree

/// One timed run: wall time, CPU time, exit code, and the peak of the process tree's summed
/// memory (PSS, see `tree_rss`).
pub struct Measured {
    pub wall: Duration,
    /// User + system seconds of the process and every descendant it waited for.
    pub cpu_s: f64,
    pub code: Option<i32>,
    pub peak_rss: u64,
}

impl Measured {
    /// The median wall and CPU time of `timed`, the peak memory of `memory`, and the exit code
    /// they share (else the first that differs from the memory run's: a run that failed once).
    pub fn median_of(timed: &[Measured], memory: &Measured) -> Measured {
        let sorted = |f: fn(&Measured) -> f64| {
            let mut v: Vec<f64> = timed.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            median(&v)
        };
        let code = timed
            .iter()
            .map(|m| m.code)
            .find(|c| *c != memory.code)
            .unwrap_or(memory.code);
        Measured {
            wall: Duration::from_secs_f64(sorted(|m| m.wall.as_secs_f64())),
            cpu_s: sorted(|m| m.cpu_s),
            code,
            peak_rss: memory.peak_rss,
        }
    }
}

/// Run `cmd` (stdout and stderr to `log`); with `sample`, sample its process tree's memory every
/// 50 ms (which costs CPU: time runs without it).
pub fn measure(cmd: &mut Command, log: &Path, sample: bool) -> Result<Measured, String> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err));
    let cpu_before = children_cpu();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(!sample));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(tree_rss(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    let wall = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak_rss = sampler.join().unwrap_or(0);
    Ok(Measured {
        wall,
        cpu_s: children_cpu() - cpu_before,
        code: status.code(),
        peak_rss,
    })
}

/// `struct rusage` of Linux (x86_64 and aarch64: `long` fields), for `getrusage`.
#[repr(C)]
struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    rest: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// User + system seconds of this process's reaped children (and theirs, when they waited for
/// them): `getrusage(RUSAGE_CHILDREN)`, which std does not wrap.
fn children_cpu() -> f64 {
    const RUSAGE_CHILDREN: i32 = -1;
    let mut u = Rusage {
        utime: [0; 2],
        stime: [0; 2],
        rest: [0; 14],
    };
    // SAFETY: `u` is a valid, writable `struct rusage` for the duration of the call.
    if unsafe { getrusage(RUSAGE_CHILDREN, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: [i64; 2]| t[0] as f64 + t[1] as f64 / 1e6;
    secs(u.utime) + secs(u.stime)
}

/// The summed memory (PSS, bytes) of `root` and all its descendants, from `/proc`.
fn tree_rss(root: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut parent = BTreeMap::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(ppid) = stat_ppid(&stat) {
                parent.insert(pid, ppid);
            }
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    // PSS, not RSS: a forked child shares most of its pages with the fork server, and summing
    // RSS would count them once per process. PSS splits each shared page among its sharers, so
    // the sum is the tree's real footprint. VmRSS only where smaps_rollup is missing.
    parent
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
                .ok()
                .and_then(|s| kb_field(&s, "Pss:"))
                .or_else(|| {
                    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                    vm_rss(&s)
                })
        })
        .sum()
}

/// `Field:    1234 kB` from a /proc file, in bytes.
fn kb_field(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The 1-minute load average (`/proc/loadavg`): how much else competed for the cores.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The parent pid from `/proc/PID/stat` (after the `(comm)`, which may hold spaces).
fn stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS:    1234 kB` from `/proc/PID/status`, in bytes.
fn vm_rss(status: &str) -> Option<u64> {
    kb_field(status, "VmRSS:")
}

// ---------------------------------------------------------------------------------------------
// Reading results

pub fn read_json(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Json::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Cases of a run that were not served from the harness's cache (`cached: true` on a case; the
/// harness leaves the field out when false). Without a cache flag in `harness verify --help`
/// and with no case carrying the field, `None`: unknown.
pub fn rerun_count(results: &Json, has_cache: bool) -> Option<usize> {
    let cases = results.get("cases")?.as_array()?;
    if !has_cache && !cases.iter().any(|c| c.get("cached").is_some()) {
        return None;
    }
    Some(
        cases
            .iter()
            .filter(|c| c.get("cached").and_then(Json::as_bool) != Some(true))
            .count(),
    )
}

/// Per-case overhead, ms: `duration_ms` minus the torch work the run timed and minus the wait
/// for a worker to start (`worker_start_ms`: a cost per job, not per case). The torch work is
/// the case's `torch_ms` (every trace, script and forward pass the harness timed, the device
/// probe's, re-traces' and shrinking's included) when results.json has it, else both variants'
/// `export.seconds`, their `run_ms` and the samples' `eager_ms`. Cases that did not run
/// (`status` other than `ran`) are left out.
pub fn overheads(results: &Json) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Some(cases) = results.get("cases").and_then(Json::as_array) else {
        return out;
    };
    for c in cases {
        if c.get("status").and_then(Json::as_str) != Some("ran")
            || c.get("cached").and_then(Json::as_bool) == Some(true)
        {
            continue;
        }
        let num = |v: Option<&Json>| v.and_then(Json::as_f64).unwrap_or(0.0);
        let mut torch_ms = 0.0;
        if let Some(t) = c.get("torch_ms").and_then(Json::as_f64) {
            let start = num(c.get("worker_start_ms"));
            let name = c.get("name").and_then(Json::as_str).unwrap_or("?");
            out.push((name.to_string(), num(c.get("duration_ms")) - t - start));
            continue;
        }
        if let Some(Json::Obj(variants)) = c.get("variants") {
            for (_, v) in variants {
                torch_ms += num(v.get("export").and_then(|e| e.get("seconds"))) * 1000.0;
                torch_ms += num(v.get("run_ms"));
            }
        }
        for s in c.get("samples").and_then(Json::as_array).unwrap_or(&[]) {
            torch_ms += num(s.get("eager_ms"));
        }
        let name = c.get("name").and_then(Json::as_str).unwrap_or("?");
        out.push((name.to_string(), num(c.get("duration_ms")) - torch_ms));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The table

pub struct Row {
    pub label: String,
    pub wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss: u64,
    pub ok: bool,
}

impl Row {
    fn new(label: &str, m: &Measured) -> Row {
        Row {
            label: label.into(),
            wall_s: m.wall.as_secs_f64(),
            cpu_s: m.cpu_s,
            peak_rss: m.peak_rss,
            ok: m.code.is_some_and(|c| c != 2),
        }
    }
}

pub struct Summary {
    /// (a) cold, (b) warm, (c) after the edit, (d) the reference: in this order.
    pub rows: Vec<Row>,
    /// Did the harness have a result cache (`--cache-dir`)?
    pub cache: bool,
    pub reran: Option<usize>,
    pub cases: usize,
    pub overhead: Vec<(String, f64)>,
    pub reference_torch_s: Option<f64>,
    /// The 1-minute load average before the first run and after the last.
    pub load: (Option<f64>, Option<f64>),
    pub cores: usize,
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "✓"
    } else {
        "✗"
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl Summary {
    pub fn render(&self) -> String {
        let reference = self.rows.get(3).map(|r| r.wall_s).unwrap_or(f64::NAN);
        let mut s = format!(
            "\n{:<26} {:>9} {:>8} {:>9} {:>10}\n",
            "run", "wall", "÷ (d)", "CPU", "peak RSS"
        );
        for r in &self.rows {
            s.push_str(&format!(
                "{:<26} {:>8.2}s {:>7.2}× {:>8.2}s {:>10}{}\n",
                r.label,
                r.wall_s,
                r.wall_s / reference,
                r.cpu_s,
                mib(r.peak_rss),
                if r.ok { "" } else { "  (run failed)" }
            ));
        }
        if !self.cache {
            s.push_str(
                "(the harness has no --cache-dir: runs (b) and (c) repeat the cold run's work)\n",
            );
        }
        if let Some(t) = self.reference_torch_s {
            s.push_str(&format!(
                "(d) spent {t:.2}s in torch work (trace, script, forward passes)\n"
            ));
        }
        if let (Some(before), Some(after)) = self.load {
            s.push_str(&format!(
                "load average {before:.1} before, {after:.1} after, on {} cores{}\n",
                self.cores,
                if before.max(after) > self.cores as f64 {
                    ": other processes competed for the CPU, timings are noisy"
                } else {
                    ""
                }
            ));
        }
        s.push_str("\ntargets\n");
        let cold = self.rows.first().map(|r| r.wall_s).unwrap_or(f64::NAN);
        let ratio = cold / reference;
        s.push_str(&format!(
            "  {} cold verify ≤ {COLD_RATIO_MAX}× reference: {ratio:.2}×\n",
            mark(ratio <= COLD_RATIO_MAX)
        ));
        let warm = self
            .rows
            .get(1)
            .map(|r| r.wall_s / cold)
            .unwrap_or(f64::NAN);
        s.push_str(&format!(
            "  {} warm re-run ≤ {:.0}% of cold: {:.0}%\n",
            mark(warm <= WARM_RATIO_MAX),
            WARM_RATIO_MAX * 100.0,
            warm * 100.0
        ));
        match self.reran {
            Some(n) => s.push_str(&format!(
                "  {} after one model edit only the affected case re-runs: {n} of {} re-ran\n",
                mark(n == 1),
                self.cases
            )),
            None => s.push_str(&format!(
                "  ? after one model edit only the affected case re-runs: unknown (no `cached` field in results.json; all {} ran)\n",
                self.cases
            )),
        }
        let mut ms: Vec<f64> = self.overhead.iter().map(|(_, v)| *v).collect();
        ms.sort_by(f64::total_cmp);
        let median = median(&ms);
        let worst = self.overhead.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        s.push_str(&format!(
            "  {} per-case overhead ≤ {OVERHEAD_MS_MAX:.0} ms: median {median:.0} ms, max {} over {} cases\n",
            mark(worst.is_some_and(|w| w.1 <= OVERHEAD_MS_MAX)),
            worst.map_or("-".into(), |(n, v)| format!("{v:.0} ms ({n})")),
            ms.len()
        ));
        let mut by_overhead: Vec<&(String, f64)> = self.overhead.iter().collect();
        by_overhead.sort_by(|a, b| b.1.total_cmp(&a.1));
        if by_overhead.len() > 1 {
            let top: Vec<String> = by_overhead
                .iter()
                .take(3)
                .map(|(n, v)| format!("{n} {v:.0} ms"))
                .collect();
            s.push_str(&format!("    largest: {}\n", top.join(", ")));
        }
        let peak = self
            .rows
            .iter()
            .take(3)
            .map(|r| r.peak_rss)
            .max()
            .unwrap_or(0);
        s.push_str(&format!(
            "  {} peak RSS ≤ 1.5 GiB (harness + workers): {}\n",
            mark(peak <= RSS_MAX),
            mib(peak)
        ));
        s
    }
}

pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check<T: PartialEq + std::fmt::Debug>(actual: T, expected: T) {
        assert_eq!(actual, expected);
    }

    #[test]
    fn generated_cases_are_deterministic_and_varied() {
        let a = generated_cases(24);
        check(a.clone(), generated_cases(24));
        check(a.len(), 24);
        check(a[0].name.as_str(), EDIT_CASE);
        let names: std::collections::BTreeSet<_> = a.iter().map(|c| c.name.clone()).collect();
        check(names.len(), 24);
        check(
            a.iter().filter(|c| c.name.starts_with("bench_mlp")).count(),
            12,
        );
        check(
            a.iter()
                .filter(|c| c.name.starts_with("bench_conv"))
                .count(),
            11,
        );
        // Only the edit case uses the edited model file.
        check(
            a.iter()
                .filter(|c| c.yaml.as_deref().unwrap().contains(EDIT_MODEL))
                .count(),
            1,
        );
        check(
            a[1].yaml.as_deref().unwrap(),
            "description: generated by cargo xtask bench\nmodel:\n  source: models/bench_models.py\n  \
             entry: MLP\n  kwargs: {in_features: 4, hidden: 16, depth: 1, out_features: 2}\n\
             inputs:\n  - {name: x, shape: [B, 4]}\ndims:\n  B: {trace: 2, min: 1, max: 8}\n\
             check:\n  samples: 24\n",
        );
        check(generated_cases(0).len(), 0);
    }

    #[test]
    fn manifest_carries_kwargs_and_eval() {
        let corpus = Corpus {
            cases: vec![
                CaseFile {
                    name: "a".into(),
                    kwargs: vec![("w".into(), "3".into())],
                    eval: true,
                    yaml: None,
                },
                CaseFile {
                    name: "b\"".into(),
                    kwargs: vec![],
                    eval: false,
                    yaml: None,
                },
            ],
            shipped: 0,
        };
        let m = reference_manifest(Path::new("/r.json"), Path::new("/w"), &corpus);
        check(
            m.as_str(),
            "{\"results\": \"/r.json\", \"work\": \"/w\", \"cases\": {\"a\": {\"kwargs\": {\"w\": 3}, \"eval\": true}, \"b\\\"\": {\"kwargs\": {}, \"eval\": false}}}\n",
        );
        let parsed = Json::parse(&m).unwrap();
        check(
            parsed
                .get("cases")
                .and_then(|c| c.get("a"))
                .and_then(|a| a.get("kwargs"))
                .and_then(|k| k.get("w"))
                .and_then(Json::as_f64),
            Some(3.0),
        );
    }

    const RESULTS: &str = r#"{"cases": [
        {"name": "a", "status": "ran", "duration_ms": 100,
         "variants": {"traced": {"export": {"seconds": 0.010}, "run_ms": 5.5},
                      "scripted": {"export": {"seconds": 0.020}, "run_ms": 4.5}},
         "samples": [{"eager_ms": 10.0}, {"eager_ms": 0.0}]},
        {"name": "b", "status": "error", "duration_ms": 7, "variants": {}},
        {"name": "c", "status": "ran", "duration_ms": 12, "cached": true, "variants": {}}
    ]}"#;

    #[test]
    fn overhead_is_duration_minus_timed_torch_work() {
        let r = Json::parse(RESULTS).unwrap();
        check(overheads(&r), vec![("a".to_string(), 50.0)]);
        // With the harness's own account of torch work and of the worker's start.
        let timed = Json::parse(
            r#"{"cases": [{"name": "t", "status": "ran", "duration_ms": 1900, "torch_ms": 70.5,
                "worker_start_ms": 1800, "variants": {}}]}"#,
        )
        .unwrap();
        check(overheads(&timed), vec![("t".to_string(), 29.5)]);
        check(rerun_count(&r, false), Some(2));
        let none_cached = Json::parse(r#"{"cases": [{"name": "a"}]}"#).unwrap();
        check(rerun_count(&none_cached, false), None);
        check(rerun_count(&none_cached, true), Some(1));
        check(median(&[1.0, 2.0, 10.0]), 2.0);
        check(median(&[1.0, 3.0]), 2.0);
    }

    #[test]
    fn timed_runs_give_their_median_and_the_memory_run_its_peak() {
        let run = |wall: f64, cpu_s: f64, code: i32, peak_rss: u64| Measured {
            wall: Duration::from_secs_f64(wall),
            cpu_s,
            code: Some(code),
            peak_rss,
        };
        let timed = [
            run(3.0, 5.0, 1, 0),
            run(2.0, 4.0, 1, 0),
            run(9.0, 6.0, 1, 0),
        ];
        let m = Measured::median_of(&timed, &run(4.0, 7.0, 1, 123));
        check(
            (m.wall.as_secs_f64(), m.cpu_s, m.code, m.peak_rss),
            (3.0, 5.0, Some(1), 123),
        );
        // One timed run that failed shows.
        let timed = [
            run(3.0, 5.0, 0, 0),
            run(2.0, 4.0, 2, 0),
            run(9.0, 6.0, 0, 0),
        ];
        check(
            Measured::median_of(&timed, &run(4.0, 7.0, 0, 1)).code,
            Some(2),
        );
    }

    #[test]
    fn child_cpu_time_grows() {
        let before = children_cpu();
        let status = Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(children_cpu() > before);
    }

    #[test]
    fn proc_fields_are_read() {
        check(stat_ppid("123 (a b) c) S 45 6 7"), Some(45));
        check(vm_rss("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048 * 1024));
        check(vm_rss("Name:\tkthreadd\n"), None);
        // This test process is its own tree, and holds some memory.
        assert!(tree_rss(std::process::id()) > 0);
    }

    #[test]
    fn table_shows_ratios_and_targets() {
        let row = |label: &str, wall_s: f64, mib: u64| Row {
            label: label.into(),
            wall_s,
            cpu_s: wall_s * 1.5,
            peak_rss: mib << 20,
            ok: true,
        };
        let s = Summary {
            rows: vec![
                row("(a) cold verify", 8.0, 900),
                row("(b) warm re-run", 0.2, 300),
                row("(c) after 1 model edit", 0.5, 400),
                row("(d) plain-Python ref", 10.0, 700),
            ],
            cache: true,
            reran: Some(1),
            cases: 40,
            overhead: vec![("a".into(), 10.0), ("b".into(), 60.0), ("c".into(), 20.0)],
            reference_torch_s: Some(4.0),
            load: (Some(0.5), Some(2.5)),
            cores: 2,
        };
        check(
            s.render().as_str(),
            "\nrun                             wall    ÷ (d)       CPU   peak RSS\n\
             (a) cold verify                8.00s    0.80×    12.00s    900 MiB\n\
             (b) warm re-run                0.20s    0.02×     0.30s    300 MiB\n\
             (c) after 1 model edit         0.50s    0.05×     0.75s    400 MiB\n\
             (d) plain-Python ref          10.00s    1.00×    15.00s    700 MiB\n\
             (d) spent 4.00s in torch work (trace, script, forward passes)\n\
             load average 0.5 before, 2.5 after, on 2 cores: other processes competed for the CPU, timings are noisy\n\
             \ntargets\n  \
             ✓ cold verify ≤ 0.8× reference: 0.80×\n  \
             ✓ warm re-run ≤ 5% of cold: 2%\n  \
             ✓ after one model edit only the affected case re-runs: 1 of 40 re-ran\n  \
             ✗ per-case overhead ≤ 50 ms: median 20 ms, max 60 ms (b) over 3 cases\n    \
             largest: b 60 ms, c 20 ms, a 10 ms\n  \
             ✓ peak RSS ≤ 1.5 GiB (harness + workers): 900 MiB\n",
        );
        let s = Summary {
            cache: false,
            reran: None,
            ..s
        };
        let text = s.render();
        assert!(text.contains("has no --cache-dir"), "{text}");
        assert!(text.contains("? after one model edit"), "{text}");
    }
}
