//! `cargo xtask gpu-bundle [--torch X.Y] [--out DIR]`: a folder that verifies the device cases
//! on a GPU machine that has Python with torch but no registry, no Rust and no venv of ours.
//!
//! Built here against the GPU machine's torch line (default 2.11, what the lent machines run):
//! the two binaries (stripped; the worker is compiled into `harness`), the shipped cases that
//! need nothing but torch, numpy and safetensors (and their models and artifacts), the zoo's
//! torchvision-free cases, a `harness.toml`, `table.py` and `run.sh`. `run.sh` puts the
//! machine's own torch `lib/` first on the library path (the binaries' runpath names this
//! checkout's venv, which does not travel), runs every case with `--device cpu` (the probe then
//! runs the CPU-made artifacts on CUDA) and `--device cuda` (the probe runs the CUDA-made
//! artifacts on the CPU), prints case × variant × device with verdicts, and exits 0 only when
//! both runs met every `expect:`.

use std::path::{Path, PathBuf};

use crate::env::{torch_lines, Env, TorchLine};

/// The torch line of the GPU machines the `device` tool lends (torch 2.11.0+cu130, Python 3.12).
const GPU_MACHINE_LINE: &str = "2.11";
/// The `--out` default, under the repository.
const DEFAULT_OUT: &str = "target/gpu-bundle";
/// The bundle must travel in one `device` call (64 MiB carried at most, with the tree).
const MAX_BYTES: u64 = 60 << 20;
/// Cases that need more than torch, numpy and safetensors on the GPU machine: AOTInductor
/// compiles C++ (a compiler, and Triton for CUDA); torchvision is not installed there.
const NEEDS_MORE: &[&str] = &["aoti_cell.yaml"];

/// `line`: `--torch`, else the GPU machines' line.
pub fn run(line: Option<&'static TorchLine>, args: &[String]) -> Result<u8, String> {
    let out = match args {
        [] => PathBuf::from(DEFAULT_OUT),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => return Err("usage: cargo xtask gpu-bundle [--torch X.Y] [--out DIR]".into()),
    };
    let line = match line {
        Some(line) => line,
        None => torch_lines::line_named(GPU_MACHINE_LINE)?,
    };
    let env = Env::prepare_line(line)?;
    let harness = env.build_harness()?;
    let out = if out.is_absolute() {
        out
    } else {
        env.root.join(out)
    };
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("bin")).map_err(|e| format!("{}: {e}", out.display()))?;
    for bin in [harness.clone(), harness.with_file_name("harness-run")] {
        let to = out.join("bin").join(bin.file_name().expect("a file"));
        copy(&bin, &to)?;
        strip(&to)?;
    }
    let cases = copy_cases(&env.root, &out)?;
    write(&out.join("harness.toml"), &project_file(&env.root)?)?;
    write(&out.join("table.py"), TABLE)?;
    write(&out.join("run.sh"), &run_script(line))?;
    make_executable(&out.join("run.sh"))?;
    let bytes = size(&out);
    println!(
        "gpu-bundle: {} ({} cases, torch {}, {:.1} MiB)",
        out.display(),
        cases,
        line.release,
        bytes as f64 / (1 << 20) as f64
    );
    if bytes > MAX_BYTES {
        return Err(format!(
            "the bundle is {bytes} bytes, over the {MAX_BYTES} a device call can carry"
        ));
    }
    println!(
        "gpu-bundle: on the GPU machine: bash {}/run.sh",
        out.display()
    );
    Ok(0)
}

/// The cases the GPU machine can run, with what they name (`models/`, `artifacts/`): every
/// top-level case but [`NEEDS_MORE`], and the zoo cases that import no torchvision.
fn copy_cases(root: &Path, out: &Path) -> Result<usize, String> {
    let from = root.join("cases");
    let to = out.join("cases");
    let mut n = 0;
    for dir in ["models", "artifacts"] {
        copy_tree(&from.join(dir), &to.join(dir))?;
    }
    for (sub, filter) in [("", false), ("zoo", true)] {
        for file in yaml_files(&from.join(sub))? {
            let name = file
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            if NEEDS_MORE.contains(&name.as_str()) || (filter && text.contains("torchvision")) {
                continue;
            }
            std::fs::create_dir_all(to.join(sub)).map_err(|e| e.to_string())?;
            copy(&file, &to.join(sub).join(&name))?;
            n += 1;
        }
    }
    Ok(n)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path.file_name().expect("a file").to_owned();
        if name == "__pycache__" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(&name))?;
        } else {
            copy(&path, &to.join(&name))?;
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map(|_| ())
        .map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn strip(bin: &Path) -> Result<(), String> {
    crate::env::run(std::process::Command::new("strip").arg(bin))
}

fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The bundle's `harness.toml`: its own cases, with the repository's project `variants` (the
/// shipped cases' expectations are written for them).
fn project_file(root: &Path) -> Result<String, String> {
    let ours = std::fs::read_to_string(root.join("harness.toml"))
        .map_err(|e| format!("harness.toml: {e}"))?;
    let variants = ours
        .lines()
        .find(|l| l.starts_with("variants"))
        .ok_or("harness.toml has no `variants` line")?;
    Ok(format!(
        "# The GPU bundle's project (cargo xtask gpu-bundle): its cases, the repository's \
         variants.\ncases = [\"cases\"]\n{variants}\n"
    ))
}

/// `run.sh`: the machine's python and torch, both devices, the table, the exit code.
fn run_script(line: &TorchLine) -> String {
    format!(
        r#"#!/bin/bash
# Verify the bundled cases on this GPU machine (made by `cargo xtask gpu-bundle`, torch {release}).
# Uses this machine's python3 (PYTHON overrides) and its torch's libraries; writes reports/.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
py="${{PYTHON:-python3}}"
info="$("$py" -c 'import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), "lib")); print(torch.cuda.is_available())')" || {{
  echo "run.sh: $py cannot import torch"; exit 2; }}
version="$(sed -n 1p <<<"$info")"; lib="$(sed -n 2p <<<"$info")"; cuda="$(sed -n 3p <<<"$info")"
echo "run.sh: $py, torch $version (the bundle was built for {release}), CUDA in Python: $cuda"
case "$version" in {release}*) ;; *) echo "run.sh: torch $version is not {release}: rebuild with cargo xtask gpu-bundle --torch X.Y"; exit 2;; esac
export LD_LIBRARY_PATH="$lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"
export HARNESS_PYTHON="$(command -v "$py")" TORCH_CPP_LOG_LEVEL=ERROR
if ! bin/harness --version >/dev/null 2>&1; then
  echo "run.sh: bin/harness does not start here (built on glibc {glibc}, which may be newer than this machine's, $(ldd --version | head -1)):"
  bin/harness --version; exit 2
fi
if ! ldd bin/harness-run | grep -q 'libtorch_cuda.so => /'; then
  echo "run.sh: bin/harness-run does not find libtorch_cuda.so:"; ldd bin/harness-run | grep -E 'torch|not found'; exit 2
fi
status=0
for device in cpu cuda; do
  echo "run.sh: harness verify --device $device"
  start=$(date +%s)
  bin/harness verify --device "$device" --out "reports/$device" --no-cache --no-snapshots --no-baseline
  code=$?
  echo "run.sh: --device $device exited $code in $(( $(date +%s) - start )) s"
  [ "$code" -eq 0 ] || status=1
done
"$py" table.py reports/cpu/results.json reports/cuda/results.json || status=1
echo "run.sh: exit $status (0: every verdict on both devices is what its case expects)"
exit $status
"#,
        release = line.release,
        glibc = glibc(),
    )
}

/// This machine's glibc (`2.36`): the binaries need at least the versions of the symbols they
/// were linked with, so an older one on the GPU machine is said up front.
fn glibc() -> String {
    std::process::Command::new("ldd")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            text.lines()
                .next()?
                .split_whitespace()
                .last()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(unknown)".into())
}

/// `table.py`: case × variant × device with each verdict, what was expected, and the device
/// probe's word on the other device.
const TABLE: &str = r#""""Print case x variant x device with verdicts from the bundle's results.json files."""

import json
import sys


def rows(path):
    try:
        with open(path) as f:
            results = json.load(f)
    except OSError:
        yield path, "-", "-", "no results", "", "", "the run ended before writing them"
        return
    for case in results["cases"]:
        device = case.get("device") or "-"
        if not case.get("variants"):
            error = (case.get("error") or {}).get("message") or case.get("status", "")
            yield case["name"], "-", device, case.get("status", "error"), "", "", error.splitlines()[0][:70]
        for variant, v in sorted(case.get("variants", {}).items()):
            found = ",".join(v.get("pitfalls", [])) or "-"
            at = next((f["location"] for f in v.get("findings", []) if f.get("location")), "")
            if at:
                found += f" at {at}"
            probe = v.get("device_check") or {}
            probe_text = ""
            if probe:
                detail = probe.get("detail", "")
                word = "FLAGGED" if probe.get("flagged") else "ok"
                if detail.startswith(("not run", "inconclusive")):
                    word = detail.split(":")[0]
                probe_text = f"{word} on {probe.get('device', '?')}"
            expected = ",".join(v.get("expected", [])) or "-"
            yield case["name"], variant, device, v.get("outcome", "?"), found, expected, probe_text


def main():
    table = [("case", "variant", "device", "verdict", "found", "expected", "probe")]
    for path in sys.argv[1:]:
        table.extend(rows(path))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


main()
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_checks_the_torch_it_was_built_for() {
        let line = torch_lines::line_named("2.11").unwrap();
        let script = run_script(line);
        assert!(script.contains("case \"$version\" in 2.11.0*)"));
        assert!(script.contains("--device \"$device\""));
        assert!(script.contains("for device in cpu cuda"));
    }
}
