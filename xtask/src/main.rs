//! `cargo xtask`: the two commands a user runs, and the project's other chores.
//!
//! - `cargo xtask verify [ARGS]`: set up the Python environment (once), build the harness
//!   against its libtorch, and run `harness verify ARGS`; the exit code is the harness's.
//! - `cargo xtask report [RESULTS...] [ARGS]`: the same build, then `harness report`: render the
//!   report (index.html, junit.xml) of saved results.json files without running anything.
//! - `cargo xtask test [ARGS]`: the same setup, then the whole test suite: `cargo test
//!   --workspace ARGS`, then the worker's pytest suite (`harness/python/tests`); both must pass.
//! - `cargo xtask lint`: `cargo fmt --check`, `cargo clippy -D warnings`, `ruff check` and
//!   `ruff format --check` over `harness/python`; all run, exit 1 if any failed (see `lint.rs`).
//! - `cargo xtask tidy [--bless]`: the tree's own rules: the code map's paths exist, module
//!   docs, only the worker client spawns, the protocol lock, no libtorch in the core crate (see
//!   `tidy.rs`); `--bless` records the protocol version and hash in `xtask/protocol.lock`.
//! - `cargo xtask bench [--quick]`: time the harness (cold, warm, after one model edit) against
//!   the plain-Python reference script on a 40-case corpus (see `bench.rs`).
//! - `cargo xtask setup`: only create `.venv` (runtime and development requirements).
//! - `cargo xtask install [--root DIR]`: build, then copy `harness` and `harness-run` into
//!   `DIR/bin` (default `~/.cargo/bin`), to run the harness from another repository.
//!
//! No dependencies on purpose: this crate must build fast and before anything else.

mod bench;
mod bench_corpora;
mod env;
mod gpu_bundle;
mod json;
mod lint;
mod tidy;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let mut rest: Vec<String> = args.collect();
    let given = match env::take_line(&mut rest) {
        Ok(line) => line,
        Err(e) => {
            eprintln!("xtask: {e}");
            return ExitCode::from(2);
        }
    };
    let line = given.unwrap_or_else(env::default_line);
    let result = match task.as_str() {
        "verify" => harness(line, "verify", &rest),
        "report" => harness(line, "report", &rest),
        "test" => test(line, &rest),
        "lint" => lint::run(&rest),
        "tidy" => tidy::run(&rest),
        "bench" => bench::run(&rest),
        "setup" => env::Env::prepare_line(line).map(|_| 0),
        "install" => install(line, &rest),
        "gpu-bundle" => gpu_bundle::run(given, &rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <verify|report|test|lint|tidy|bench|setup> [ARGS]\n\n  \
                 verify [PATHS] [--filter RE] [--seed N] [--baseline PATH] [--save-baseline] [--format json] [--accept] ...\n      \
                 verify cases (default: cases/), write reports/latest/{{results.json,index.html,junit.xml}}\n  \
                 report [RESULTS...] [--out DIR] [--baseline PATH]\n      \
                 render the report of saved results (default: reports/latest/results.json)\n  \
                 test [CARGO TEST ARGS]   run every test (cargo test --workspace, then the worker's pytest)\n  \
                 lint                     cargo fmt --check, clippy -D warnings, ruff check, ruff format --check\n  \
                 tidy [--bless]           the tree's rules (code map, module docs, spawners, protocol lock,\n                           \
                 no libtorch in the core crate); --bless records the protocol lock\n  \
                 bench [--quick]          time verify (cold, warm, after an edit) against plain Python\n  \
                 setup                    only create .venv and check it\n  \
                 install [--root DIR]     build, then copy `harness` and `harness-run` into DIR/bin\n                           \
                 (default ~/.cargo/bin): run `harness` in any repository\n  \
                 gpu-bundle [--out DIR]   build a folder that verifies the device cases on a GPU machine\n\n\
                 verify, report, test, setup and install take --torch X.Y (2.11, 2.12 or 2.13, the\n\
                 default): that torch, in .venv-torch-X.Y, built into target/torch-X.Y"
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
fn harness(line: &'static env::TorchLine, command: &str, args: &[String]) -> Result<u8, String> {
    let env = env::Env::prepare_line(line)?;
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
    if command == "verify" && !given("--snapshots") && !given("--no-snapshots") {
        if env.is_default() {
            cmd.arg("--snapshots")
                .arg(relative(&cwd, env.root.join("harness/snapshots")));
        } else {
            // A `.code` snapshot is what one torch prints; these are the default line's.
            eprintln!(
                "xtask: torch {}: the .code snapshots in harness/snapshots are torch {}'s: not \
                 checked (--snapshots DIR checks others)",
                env.line.release,
                torch_default_release()
            );
            cmd.arg("--no-snapshots");
        }
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

fn torch_default_release() -> &'static str {
    env::torch_lines::line_named(env::torch_lines::DEFAULT_LINE)
        .map(|l| l.release)
        .unwrap_or("?")
}

/// `cargo xtask install [--root DIR]`: build the release binaries against this checkout's
/// libtorch and copy `harness` and `harness-run` into `DIR/bin` (default: cargo's own bin
/// folder, `$CARGO_HOME/bin`, as `cargo install` uses). The binaries find libtorch in this
/// checkout's `.venv` (their runpath), so the checkout stays where it is.
fn install(line: &'static env::TorchLine, args: &[String]) -> Result<u8, String> {
    let root = match args {
        [] => cargo_home().join("bin"),
        [flag, dir] if flag == "--root" => PathBuf::from(dir).join("bin"),
        _ => return Err("usage: cargo xtask install [--torch X.Y] [--root DIR]".into()),
    };
    let env = env::Env::prepare_line(line)?;
    let harness = env.build_harness()?;
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    for bin in [harness.clone(), harness.with_file_name("harness-run")] {
        let to = root.join(bin.file_name().expect("a file"));
        // Copy to a temporary name and rename: a running harness keeps its old file.
        let tmp = to.with_extension("new");
        std::fs::copy(&bin, &tmp)
            .map_err(|e| format!("{} -> {}: {e}", bin.display(), tmp.display()))?;
        std::fs::rename(&tmp, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        println!("install: {}", to.display());
    }
    println!(
        "install: done; in your repository: write harness.toml (README: \"Your own repository\"), \
         then `harness setup` and `harness verify`"
    );
    Ok(0)
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

/// Run the whole test suite with the environment the harness needs: the Rust tests, then the
/// worker's pytest suite. Both run; the exit code is 1 if either failed.
fn test(line: &'static env::TorchLine, args: &[String]) -> Result<u8, String> {
    let env = env::Env::prepare_line(line)?;
    let manifest = env.manifest_args();
    let mut cargo_args = vec!["test", "--workspace"];
    cargo_args.extend(manifest.iter().map(String::as_str));
    cargo_args.extend(args.iter().map(String::as_str));
    // The integration tests build the core crate's `harness` binary themselves. Their
    // snapshots hold the commands a user outside this checkout is told (`harness verify`).
    let cargo = env::run(env.cargo_command(&cargo_args).env_remove("HARNESS_COMMAND"));
    let pytest = pytest(&env);
    let mut failed = false;
    match &cargo {
        Ok(()) => println!("test: ok      cargo test --workspace"),
        Err(e) => {
            failed = true;
            println!("test: FAILED  cargo test --workspace: {e}");
        }
    }
    match &pytest {
        Ok(None) => println!("test: ok      pytest {PYTHON_TESTS}"),
        Ok(Some(why)) => println!("test: skipped pytest {PYTHON_TESTS}: {why}"),
        Err(e) => {
            failed = true;
            println!("test: FAILED  pytest {PYTHON_TESTS}: {e}");
        }
    }
    Ok(u8::from(failed))
}

const PYTHON_TESTS: &str = "harness/python/tests";

/// The worker's tests: `python -m pytest -q harness/python/tests` in the venv. `Ok(Some(why))`
/// when there is no test folder yet. Neither bytecode nor pytest's cache is written: files under
/// `harness/python` are part of the harness's build id.
fn pytest(env: &env::Env) -> Result<Option<String>, String> {
    if !env.root.join(PYTHON_TESTS).is_dir() {
        let why = format!("{PYTHON_TESTS} does not exist yet");
        eprintln!("xtask: skipping the worker's pytest suite: {why}");
        return Ok(Some(why));
    }
    let mut cmd = env.command(env.python());
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", PYTHON_TESTS])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    // The worker package imports as `harness_worker`, whatever pytest's rootdir.
    let mut paths = vec![env.root.join("harness/python")];
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&old));
    }
    cmd.env(
        "PYTHONPATH",
        std::env::join_paths(paths).map_err(|e| e.to_string())?,
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run pytest: {e}"))?;
    pytest_verdict(status.code())
}

/// pytest's exit code: 0 passed, 5 collected nothing (a failure here: the folder exists, so
/// tests were meant to run), anything else failed.
fn pytest_verdict(code: Option<i32>) -> Result<Option<String>, String> {
    match code {
        Some(0) => Ok(None),
        Some(5) => Err(format!(
            "pytest collected no tests in {PYTHON_TESTS} (exit 5): are the files named test_*.py?"
        )),
        Some(c) => Err(format!("pytest failed (exit {c})")),
        None => Err("pytest was killed by a signal".into()),
    }
}

/// Does the argument list name case files or folders (not only flags and their values)?
fn positional(args: &[String]) -> bool {
    const WITH_VALUE: [&str; 17] = [
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
        "--variants",
        "--durations",
        "--project",
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
        assert!(!positional(&s(&["--variants", "scripted"])));
    }

    #[test]
    fn pytest_finding_no_tests_is_a_failure() {
        assert_eq!(pytest_verdict(Some(0)), Ok(None));
        assert!(pytest_verdict(Some(5)).unwrap_err().contains("no tests"));
        assert!(pytest_verdict(Some(1)).is_err());
        assert!(pytest_verdict(None).is_err());
    }
}
