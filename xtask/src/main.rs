//! `cargo xtask`: the two commands a user runs, and the project's other chores.
//!
//! - `cargo xtask verify [ARGS]`: set up the Python environment (once), build the harness
//!   against its libtorch, and run `harness verify ARGS`; the exit code is the harness's.
//! - `cargo xtask report [RESULTS...] [ARGS]`: the same build, then `harness report`: render the
//!   report (index.html, junit.xml) of saved results.json files without running anything.
//! - `cargo xtask test [ARGS]`: the same setup, then the whole test suite (`cargo test`).
//! - `cargo xtask bench [--quick]`: time the harness (cold, warm, after one model edit) against
//!   the plain-Python reference script on a 40-case corpus (see `bench.rs`).
//!
//! Few dependencies on purpose: this crate must build fast and before anything else.

mod bench;
mod env;
mod json;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "verify" => harness("verify", &rest),
        "report" => harness("report", &rest),
        "test" => test(&rest),
        "bench" => bench::run(&rest),
        "setup" => env::Env::prepare().map(|_| 0),
        _ => {
            eprintln!(
                "usage: cargo xtask <verify|report|test|bench|setup> [ARGS]\n\n  \
                 verify [PATHS] [--filter RE] [--seed N] [--baseline PATH] [--save-baseline] [--format json] [--accept] ...\n      \
                 verify cases (default: cases/), write reports/latest/{{results.json,index.html,junit.xml}}\n  \
                 report [RESULTS...] [--out DIR] [--baseline PATH]\n      \
                 render the report of saved results (default: reports/latest/results.json)\n  \
                 test [CARGO TEST ARGS]   run every test, with the real worker and libtorch\n  \
                 bench [--quick]          time verify (cold, warm, after an edit) against plain Python\n  \
                 setup                    only create .venv and check it"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(2)
        }
    }
}

/// Build the harness (release) and run `harness <command>` with the user's arguments.
fn harness(command: &str, args: &[String]) -> Result<u8, String> {
    let env = env::Env::prepare()?;
    let bin = env.build_harness()?;
    let mut cmd = Command::new(&bin);
    cmd.arg(command);
    env.apply(&mut cmd);
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    let given_paths = positional(args);
    let given = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    cmd.args(args);
    // Defaults relative to the repository, whatever folder the user runs from.
    if command == "report" {
        if !given_paths {
            cmd.arg(relative(&cwd, env.root.join("reports/latest/results.json")));
        }
    } else if !given_paths {
        cmd.arg(relative(&cwd, env.root.join("cases")));
    }
    if command == "verify" && !given("--snapshots") {
        cmd.arg("--snapshots")
            .arg(relative(&cwd, env.root.join("harness/snapshots")));
    }
    if command == "verify" && !given("--out") {
        let folder = if given("--replay") {
            "reports/replay"
        } else {
            "reports/latest"
        };
        cmd.arg("--out").arg(relative(&cwd, env.root.join(folder)));
    }
    // The accepted baseline lives in the repository's reports/, wherever the user runs from.
    if !given("--baseline") && !given("--no-baseline") {
        let baseline = env.root.join("reports/baseline.json");
        if baseline.is_file() || given("--save-baseline") {
            cmd.arg("--baseline").arg(relative(&cwd, baseline));
        }
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    Ok(status.code().map(|c| c as u8).unwrap_or(2))
}

/// Run the whole test suite with the environment the harness needs.
fn test(args: &[String]) -> Result<u8, String> {
    let env = env::Env::prepare()?;
    let mut cargo_args = vec!["test", "--workspace"];
    cargo_args.extend(args.iter().map(String::as_str));
    match env.cargo(&cargo_args) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("xtask: {e}");
            Ok(1)
        }
    }
}

/// Does the argument list name case files or folders (not only flags and their values)?
fn positional(args: &[String]) -> bool {
    const WITH_VALUE: [&str; 14] = [
        "--filter",
        "--seed",
        "--json",
        "--out",
        "--python",
        "--timeout",
        "--replay",
        "--max-elements",
        "--baseline",
        "--format",
        "--snapshots",
        "--cache-dir",
        "--jobs",
        "--shard",
    ];
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if WITH_VALUE.contains(&a.as_str()) {
            skip = true;
        } else if !a.starts_with('-') {
            return true;
        }
    }
    false
}

fn relative(cwd: &std::path::Path, path: PathBuf) -> PathBuf {
    path.strip_prefix(cwd).map(PathBuf::from).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_arguments_are_told_from_flag_values() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(!positional(&s(&[])));
        assert!(!positional(&s(&["--filter", "cell", "--seed", "3"])));
        assert!(positional(&s(&["--seed", "3", "cases/my_cell.yaml"])));
        assert!(!positional(&s(&["--json=out.json"])));
        assert!(!positional(&s(&[
            "--baseline",
            "b.json",
            "--format",
            "json"
        ])));
        assert!(!positional(&s(&["--save-baseline", "--no-baseline"])));
        assert!(positional(&s(&["--baseline", "b.json", "r.json"])));
        assert!(!positional(&s(&["--snapshots", "snaps", "--accept"])));
        assert!(positional(&s(&["--accept", "cases/my_cell.yaml"])));
    }
}
