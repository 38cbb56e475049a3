//! The `harness` command line: `harness verify [PATHS]...` runs cases and writes results.json,
//! then renders the report (index.html, a timestamped copy, junit.xml) from it; `harness report
//! RESULTS...` renders the report of saved results without running anything.
//!
//! Two binaries share it. `harness` does not link libtorch (whose start-up alone takes 0.13 s):
//! it renders reports, and serves a `verify` whose every case is in the result cache; anything
//! else it hands to `harness-run` (next to it, the same arguments, by exec), which links
//! libtorch and runs cases.
//!
//! Exit codes: 0 every outcome as the case files expect, 1 a divergence, a stale expectation, a
//! `.code` snapshot to review or a new failure against the baseline, 2 the harness itself failed
//! (bad case file, missing model, broken environment).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `println!` that ignores a closed stdout (`harness verify | head`): the run goes on, its
/// results.json is written and its exit code stands, instead of a panic on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

use std::io::IsTerminal;
use std::path::Path;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cache::Cache;
use crate::case::{Variant, VariantChoice};
use crate::console::Console;
use crate::options::Options;
use crate::project::Project;
use crate::report::{self, baseline};
use crate::results::{exit, CaseResult, Results};
use crate::snapshot::{self, Mode, Policy};
use crate::verify::{self, select, Request};
use crate::worker;

/// How `harness-run` runs cases (`verify::verify`); `harness` has none, so it never links
/// libtorch.
pub type Verifier = fn(&Request, &mut (dyn FnMut(&CaseResult) + Send)) -> anyhow::Result<Results>;

/// The binary that runs cases, next to `harness`.
pub const RUN_BINARY: &str = "harness-run";

#[derive(Parser)]
#[command(
    name = "harness",
    // Which torch line the binaries were built for: `harness 0.1.0 (torch 2.12.0)`.
    version = concat!(env!("CARGO_PKG_VERSION"), " (torch ", env!("HARNESS_TORCH_VERSION"), ")"),
    about = "Trace-versus-script verification for TorchScript"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify cases: trace and script each model, run the artifacts in libtorch, compare with eager.
    Verify(Box<VerifyArgs>),
    /// Render the report (index.html, junit.xml) of saved results.json files, without running.
    Report(ReportArgs),
    /// Install what the worker needs and the project's requirements files into the project's
    /// Python environment (creating its `venv` first), then check its torch.
    Setup(SetupArgs),
}

#[derive(clap::Args)]
struct ProjectArgs {
    /// The project file (default: the nearest harness.toml at or above the working folder).
    #[arg(long)]
    project: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SetupArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The interpreter to install into (default: as for verify).
    #[arg(long)]
    python: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Lines per case and variant, then a summary.
    Human,
    /// Only the results document (results.json's schema) on stdout.
    Json,
}

#[derive(clap::Args)]
struct BaselineArgs {
    /// A previous results.json to compare with (default: the project's baseline,
    /// reports/baseline.json, when it exists).
    /// New failures against it fail the gate.
    #[arg(long, conflicts_with = "no_baseline")]
    baseline: Option<PathBuf>,
    /// Do not compare with any baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Accept these results as the new baseline: write them to the baseline path
    /// (--baseline PATH, else reports/baseline.json), after comparing with the old one.
    #[arg(long)]
    save_baseline: bool,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// results.json files; several are merged into one report (a case named again replaces
    /// the earlier one).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Where index.html, history/ and junit.xml go (default: the folder of the one results
    /// file, or reports/merged for several, where the merged results.json is written too).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    baseline: BaselineArgs,
    #[command(flatten)]
    project: ProjectArgs,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Case files or folders of case files (default: the project's `cases`, else cases/).
    paths: Vec<PathBuf>,
    /// Only cases whose name matches this regular expression.
    #[arg(long)]
    filter: Option<String>,
    /// Seed for every case (overrides `check.seed`).
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write results.json (default: OUT/results.json).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Output folder for results and artifacts (default: reports/latest, or reports/replay
    /// with --replay, so a replay never overwrites the last full run).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Python interpreter with torch 2.13.0 (default: $HARNESS_PYTHON, then the project's
    /// `python` or `venv`, then .venv/bin/python, then python3).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Check only the trace input and this saved input (a counterexample file), to replay it.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Run exactly these variants of every case, comma-separated (`traced,frozen`), over the
    /// case's `variants:` and the project's; `shipped` still joins each case that names an
    /// `artifact:`.
    #[arg(long, value_name = "NAMES")]
    variants: Option<String>,
    /// Seconds one case may take before its worker is killed (overrides `check.timeout_s`;
    /// default 300).
    #[arg(long)]
    timeout: Option<f64>,
    /// Most elements one generated sample may hold (overrides `check.max_elements`; default
    /// 16777216).
    #[arg(long)]
    max_elements: Option<u64>,
    /// Where eager and the variants run: cpu, cuda (an error where libtorch sees no GPU) or
    /// auto (CUDA where there is one); overrides each case's `check.device` and the project's
    /// `device` (default: cpu).
    #[arg(long, value_enum)]
    device: Option<crate::case::DeviceChoice>,
    /// Folder of the reviewed `.code` snapshots (`<case>__<variant>.snap`; default: the
    /// project's `snapshots`, else `snapshots/` in the first cases folder).
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Write new and changed `.code` snapshots (never allowed when CI is set).
    #[arg(long)]
    accept: bool,
    /// Run every case, ignoring (and not filling) the result cache.
    #[arg(long)]
    no_cache: bool,
    /// Where unchanged cases' results are kept (default: `cache/` in the output folder).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Cases run at once, each with its own worker (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Only part k of n of the selected cases (for CI matrices; `harness report` merges them).
    #[arg(long, value_parser = crate::verify::parse_shard)]
    shard: Option<(usize, usize)>,
    /// Do not check `.code` snapshots (ad-hoc runs on models that have none).
    #[arg(long, conflicts_with = "accept")]
    no_snapshots: bool,
    /// After the summary, list the N slowest cases that ran (with their largest phases) and
    /// the time by phase over the run, as test runners list slow tests (every case's phases are
    /// in results.json, `timeline`, and in the report).
    #[arg(long, value_name = "N")]
    durations: Option<usize>,
    /// `human` (default) or `json`: the results document on stdout, no other lines there.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    #[command(flatten)]
    baseline: BaselineArgs,
    #[command(flatten)]
    project: ProjectArgs,
}

/// The command line, with the verifier of `harness-run` (`None` in `harness`).
pub fn main(full: Option<Verifier>) -> ExitCode {
    // OpenMP threads that spin while waiting steal the core the other job (or the worker) needs:
    // on 2 cores, tiny forward passes took milliseconds instead of microseconds. Workers inherit
    // this; a user's own setting wins. Set before libtorch starts any thread.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Verify(args) => run_verify(*args, full),
        Command::Report(args) => run_report(args),
        Command::Setup(args) => run_setup(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::HARNESS_ERROR)
        }
    }
}

fn run_verify(args: VerifyArgs, full: Option<Verifier>) -> anyhow::Result<u8> {
    if let Some(t) = args.timeout.filter(|t| !(t.is_finite() && *t > 0.0)) {
        anyhow::bail!("--timeout: expected a number of seconds > 0, got {t}");
    }
    if args.max_elements == Some(0) {
        anyhow::bail!("--max-elements: expected at least 1");
    }
    let filter = args
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    let run_variants = args.variants.as_deref().map(parse_variants).transpose()?;
    let project = Project::discover(args.project.project.as_deref())?;
    if args.paths.is_empty() && project.file.is_none() && !project.cases[0].exists() {
        anyhow::bail!(
            "no case files given, no {} at or above {}, and no cases/ folder here: name case \
             files or folders, or write a {0} (README: \"Your own repository\")",
            crate::project::FILE_NAME,
            project.root.display()
        );
    }
    let python = project.interpreter(args.python);
    let replay = args.replay.is_some();
    let out = args.out.unwrap_or_else(|| {
        if replay {
            project.out.with_file_name("replay")
        } else {
            project.out.clone()
        }
    });
    // Read the baseline before running, so a missing or broken one fails fast. A replay checks
    // one input, so it is never compared with a full run.
    let base = if replay {
        None
    } else {
        load_baseline(&args.baseline, &project)?
    };
    let ci = snapshot::is_ci();
    if args.accept && ci {
        anyhow::bail!(
            "--accept: CI is set, and snapshots are never written in CI; \
             accept locally and commit the snapshots"
        );
    }
    let mode = if args.accept {
        Mode::Accept
    } else if ci {
        Mode::ReadOnly
    } else {
        Mode::Check
    };
    let req = Request {
        paths: if args.paths.is_empty() {
            project.cases.clone()
        } else {
            args.paths
        },
        filter,
        options: Options {
            python,
            out_dir: out.clone(),
            seed: args.seed,
            timeout: args.timeout.map(Duration::from_secs_f64),
            max_elements: args.max_elements,
            replay: args.replay,
            torch_threads: None,
            python_path: project.roots.clone(),
            variants: VariantChoice {
                project: project.variants.clone(),
                run: run_variants,
            },
            device: crate::options::DeviceSetting {
                project: project.device,
                run: args.device,
                cuda: None,
            },
        },
        snapshots: (!args.no_snapshots).then_some(Policy {
            dir: args.snapshots.unwrap_or_else(|| project.snapshots.clone()),
            mode,
        }),
        cache: (!args.no_cache).then(|| Cache {
            dir: args.cache_dir.clone().unwrap_or_else(|| out.join("cache")),
        }),
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }),
        shard: args.shard,
    };
    crate::interrupt::install();
    let human = args.format == Format::Human;
    let console = Console::default();
    let mut on_case = |case: &CaseResult| {
        if human {
            console.print_case(case);
        }
    };
    let results = match full {
        Some(run) => {
            let progress = progress_bar(&select(&req)?);
            let mut done = 0;
            let results = run(&req, &mut |case: &CaseResult| {
                done += 1;
                match &progress {
                    Some((bar, names)) => {
                        bar.inc(1);
                        bar.set_message(names.get(done).cloned().unwrap_or_default());
                        bar.suspend(|| on_case(case));
                    }
                    None => on_case(case),
                }
            });
            if let Some((bar, _)) = &progress {
                bar.finish_and_clear();
            }
            results?
        }
        // Everything from the cache, or else the binary that runs cases.
        None => match verify::from_cache(&req, &mut on_case)? {
            Some(results) => results,
            None => return exec_run_binary(),
        },
    };
    let json = args.json.unwrap_or_else(|| out.join("results.json"));
    results.write(&json)?;
    let regression = base.map(|(path, b)| baseline::compare(&path, &b, &results));
    if human {
        if let Some(n) = args.durations.filter(|n| *n > 0) {
            let lines = crate::timeline::render(&crate::timeline::summarize(&results, n));
            say!("{}", lines.trim_end());
        }
        say!("{}", Console::summary(&results));
        if let Some(line) = Console::snapshot_summary(&results) {
            say!("{line}");
        }
        if let Some(r) = &regression {
            say!("{}", r.summary());
            for c in &r.new_failures {
                say!(
                    "NEW FAILURE  {}/{}: {} -> {}",
                    c.case,
                    c.variant,
                    c.before,
                    c.after
                );
            }
        }
        say!("results: {}", json.display());
    }
    // The report is rendered from the results.json just written, never from live state; a
    // failing report step is logged and does not change the exit code.
    match Results::read(&json).and_then(|saved| report::write(&saved, regression.as_ref(), &out)) {
        Ok(w) if human => say!(
            "report: {}  (junit: {})",
            w.html.display(),
            w.junit.display()
        ),
        Ok(_) => {}
        Err(e) => eprintln!("warning: the report could not be written: {e:#}"),
    }
    if args.baseline.save_baseline && !replay {
        let path = baseline_path(&args.baseline, &project);
        results.write(&path)?;
        if human {
            say!("baseline: {} (accepted)", path.display());
        }
    }
    if !human {
        say!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(baseline::gate(&results, regression.as_ref()))
}

/// `--variants traced,frozen`: known names, not `shipped`, at least one.
fn parse_variants(names: &str) -> anyhow::Result<Vec<Variant>> {
    let chosen = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(Variant::for_every_case)
        .collect::<Result<Vec<_>, _>>()
        .and_then(Variant::choice);
    chosen.map_err(|e| anyhow::anyhow!("--variants: {e}"))
}

/// Replace this process by `harness-run` with the same arguments (it prints, exits, and is
/// signalled as this process would be).
fn exec_run_binary() -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let run = exe.with_file_name(RUN_BINARY);
    let err = std::process::Command::new(&run)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::bail!(
        "cannot run {} (built with `cargo build -p harness`): {err}",
        run.display()
    )
}

fn run_report(args: ReportArgs) -> anyhow::Result<u8> {
    let project = Project::discover(args.project.project.as_deref())?;
    let mut parts = Vec::new();
    for p in &args.results {
        parts.push(Results::read(p).map_err(|e| anyhow::anyhow!("{}: {e:#}", p.display()))?);
    }
    let several = parts.len() > 1;
    let results = report::merge(parts)?;
    let out = args.out.unwrap_or_else(|| {
        if several {
            project.out.with_file_name("merged")
        } else {
            args.results[0]
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf()
        }
    });
    if several {
        results.write(&out.join("results.json"))?;
    }
    let regression = load_baseline(&args.baseline, &project)?
        .map(|(path, b)| baseline::compare(&path, &b, &results));
    let w = report::write(&results, regression.as_ref(), &out)?;
    say!("{}", Console::summary(&results));
    if let Some(r) = &regression {
        say!("{}", r.summary());
    }
    say!(
        "report: {}  (junit: {})",
        w.html.display(),
        w.junit.display()
    );
    if args.baseline.save_baseline {
        let path = baseline_path(&args.baseline, &project);
        results.write(&path)?;
        say!("baseline: {} (accepted)", path.display());
    }
    Ok(baseline::gate(&results, regression.as_ref()))
}

/// What the worker itself needs besides the project's requirements: the torch whose libtorch
/// runs the artifacts, and the packages its wire format uses.
fn worker_packages() -> Vec<String> {
    vec![
        format!("torch=={}", crate::TORCH_VERSION),
        "safetensors".into(),
        "numpy".into(),
    ]
}

/// `harness setup`: the project's venv (made when missing), the worker's packages and the
/// project's requirements files installed into it, then its torch checked.
fn run_setup(args: SetupArgs) -> anyhow::Result<u8> {
    let project = Project::discover(args.project.project.as_deref())?;
    let python = project.interpreter(args.python);
    if let Some(venv) = project.venv.as_ref().filter(|v| python.starts_with(v)) {
        if !python.exists() {
            let base = std::env::var_os("HARNESS_BOOTSTRAP_PYTHON")
                .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
            say!("setup: creating {} with {}", venv.display(), base.display());
            worker::create_venv(&base, venv)?;
        }
    }
    let files: Vec<String> = project
        .requirements
        .iter()
        .map(|r| r.display().to_string())
        .collect();
    say!(
        "setup: installing {} {} into {}'s environment",
        worker_packages().join(" "),
        files
            .iter()
            .map(|f| format!("-r {f}"))
            .collect::<Vec<_>>()
            .join(" "),
        python.display()
    );
    worker::pip_install(&python, &worker_packages(), &project.requirements)?;
    match worker::torch_version(&python)? {
        Some(v) if worker::same_torch(&v, crate::TORCH_VERSION) => {
            say!(
                "setup: {} has torch {v}: ready; run `harness verify`",
                python.display()
            );
            Ok(exit::OK)
        }
        found => anyhow::bail!(
            "{} imports torch {}, not {}: the harness cannot run its artifacts",
            python.display(),
            found.as_deref().unwrap_or("(none)"),
            crate::TORCH_VERSION
        ),
    }
}

fn baseline_path(args: &BaselineArgs, project: &Project) -> PathBuf {
    args.baseline
        .clone()
        .unwrap_or_else(|| project.baseline.clone())
}

/// The baseline to compare with: `--baseline PATH` (which must exist), else the default one if
/// it exists, else none.
fn load_baseline(
    args: &BaselineArgs,
    project: &Project,
) -> anyhow::Result<Option<(String, Results)>> {
    if args.no_baseline {
        return Ok(None);
    }
    let path = match &args.baseline {
        Some(p) if p.exists() || !args.save_baseline => p.clone(),
        Some(_) => return Ok(None), // --save-baseline will create it
        None if project.baseline.is_file() => project.baseline.clone(),
        None => return Ok(None),
    };
    let b =
        Results::read(&path).map_err(|e| anyhow::anyhow!("baseline {}: {e:#}", path.display()))?;
    Ok(Some((path.display().to_string(), b)))
}

/// A progress bar on stderr for runs of several cases, only when stderr is a terminal; with the
/// case names, so it can show the one running.
fn progress_bar(files: &[PathBuf]) -> Option<(ProgressBar, Vec<String>)> {
    if files.len() < 2 || !std::io::stderr().is_terminal() {
        return None;
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let bar = ProgressBar::with_draw_target(Some(files.len() as u64), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} cases  {elapsed}  {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(names[0].clone());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some((bar, names))
}
