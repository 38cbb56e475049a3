//! `cargo xtask lint`: the style and lint gates, all run, each reported, exit 1 if any failed.
//!
//! `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings` (with the
//! build environment: the venv's python first on PATH, `LIBTORCH_USE_PYTORCH=1`), then the
//! worker's Python: `ruff check` and `ruff format --check` over `harness/python`, with the venv's
//! ruff (pinned in `harness/python/requirements-dev.txt`) and its config in
//! `harness/python/pyproject.toml`.

use std::process::Command;

use crate::env::Env;

const PYTHON_DIR: &str = "harness/python";

pub fn run(args: &[String]) -> Result<u8, String> {
    if let Some(a) = args.first() {
        return Err(format!("lint: unknown argument {a:?} (it takes none)"));
    }
    let env = Env::prepare()?;
    let ruff = env.tool("ruff");
    let mut steps: Vec<(String, Result<Command, String>)> = vec![
        (
            "cargo fmt --all --check".into(),
            Ok(env.cargo_command(&["fmt", "--all", "--check"])),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings".into(),
            Ok(env.cargo_command(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ),
    ];
    for ruff_args in [
        &["check", "--no-cache", PYTHON_DIR][..],
        &["format", "--check", "--no-cache", PYTHON_DIR][..],
    ] {
        let name = format!(
            "ruff {}",
            ruff_args
                .iter()
                .filter(|a| **a != "--no-cache")
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        );
        let cmd = if ruff.is_file() {
            let mut cmd = env.command(&ruff);
            cmd.args(ruff_args);
            Ok(cmd)
        } else {
            Err(format!(
                "{} is missing: it comes from {PYTHON_DIR}/requirements-dev.txt",
                ruff.display()
            ))
        };
        steps.push((name, cmd));
    }
    let mut results = Vec::new();
    for (name, cmd) in steps {
        eprintln!("xtask lint: {name}");
        let verdict = cmd.and_then(|mut cmd| match cmd.status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("failed ({s})")),
            Err(e) => Err(format!("cannot run: {e}")),
        });
        results.push((name, verdict));
    }
    let mut failed = 0;
    for (name, verdict) in &results {
        match verdict {
            Ok(()) => println!("lint: ok      {name}"),
            Err(why) => {
                failed += 1;
                println!("lint: FAILED  {name}: {why}");
            }
        }
    }
    Ok(u8::from(failed > 0))
}
