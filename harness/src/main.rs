//! The `harness` command line: `harness verify [PATHS]...` runs cases and writes results.json.
//!
//! Exit codes: 0 every outcome as the case files expect, 1 a divergence, a stale expectation or a
//! `.code` snapshot to review, 2 the harness itself failed (bad case file, missing model, broken
//! environment).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use harness::console::Console;
use harness::results::exit;
use harness::run::Options;
use harness::snapshot::{self, Mode, Policy};
use harness::verify::{verify, Request};

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Trace-versus-script verification for TorchScript"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify cases: trace and script each model, run the artifacts in libtorch, compare with eager.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Case files or folders of case files.
    #[arg(default_value = "cases")]
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
    /// Python interpreter with torch 2.13.0 (default: $HARNESS_PYTHON, then .venv/bin/python).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Check only the trace input and this saved input (a counterexample file), to replay it.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Seconds one worker request (load, export, eager) may take.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Folder of the reviewed `.code` snapshots (`<case>__<variant>.snap`).
    #[arg(long, default_value = "harness/snapshots")]
    snapshots: PathBuf,
    /// Write new and changed `.code` snapshots (never allowed when CI is set).
    #[arg(long)]
    accept: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Verify(args) => match run_verify(args) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(exit::HARNESS_ERROR)
            }
        },
    }
}

fn run_verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let filter = args
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--filter: {e}"))?;
    let python = args
        .python
        .or_else(|| std::env::var_os("HARNESS_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| {
            let venv = PathBuf::from(".venv/bin/python");
            if venv.exists() {
                venv
            } else {
                PathBuf::from("python3")
            }
        });
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from(if args.replay.is_some() {
            "reports/replay"
        } else {
            "reports/latest"
        })
    });
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
        paths: args.paths,
        filter,
        options: Options {
            python,
            out_dir: out.clone(),
            seed: args.seed,
            timeout: Duration::from_secs(args.timeout),
            replay: args.replay,
        },
        snapshots: Some(Policy {
            dir: args.snapshots,
            mode,
        }),
    };
    let console = Console::default();
    let results = verify(&req, |case| console.print_case(case))?;
    let json = args.json.unwrap_or_else(|| out.join("results.json"));
    results.write(&json)?;
    println!("{}", Console::summary(&results));
    if let Some(line) = Console::snapshot_summary(&results) {
        println!("{line}");
    }
    println!("results: {}", json.display());
    Ok(results.exit_code())
}
