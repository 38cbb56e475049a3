//! Devices and torch lines, on whatever machine runs the tests: `harness-run` links
//! `libtorch_cuda` when the torch has it and still starts without a GPU; `--device cuda` where
//! libtorch sees none is one clear error before any case runs; `auto` falls back to the CPU and
//! says where each case ran; a case that asks for CUDA alone errors alone; results name the
//! libtorch that ran the variants. On a GPU machine the same tests check the CUDA side instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::results::{exit, CaseStatus, Results};
use harness_engine::libtorch;

use super::{harness_cli, python};

/// The torch `lib/` folder of the test's Python.
fn torch_lib() -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .expect("python runs");
    assert!(out.status.success(), "python cannot import torch");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[test]
fn harness_run_links_libtorch_cuda_when_the_torch_has_it_and_starts_without_a_gpu() {
    let bin = Path::new(env!("CARGO_BIN_EXE_harness-run"));
    let has_cuda = torch_lib().join("libtorch_cuda.so").is_file();
    assert_eq!(
        libtorch::CUDA_LINKED,
        has_cuda,
        "the build saw another torch"
    );
    let out = Command::new("readelf")
        .arg("-d")
        .arg(bin)
        .output()
        .expect("readelf runs");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        dynamic.contains("[libtorch_cuda.so]"),
        has_cuda,
        "NEEDED entries of {}:\n{dynamic}",
        bin.display()
    );
    // It starts (libtorch_cuda's static initializers need no driver) and says its libtorch.
    let version = Command::new(bin).arg("--version").output().unwrap();
    assert!(version.status.success(), "{version:?}");
    let said = String::from_utf8_lossy(&version.stdout);
    let line = format!("(torch {})", harness::TORCH_VERSION);
    assert!(said.contains(&line), "{said}");
}

#[test]
fn results_name_the_libtorch_that_ran_the_variants() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let o = harness_cli(&dir.path().join("snaps"))
        .arg(super::fixtures().join("several"))
        .args([
            "--no-cache",
            "--no-snapshots",
            "--device",
            "auto",
            "--variants",
            "scripted",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--out")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(i32::from(exit::OK)), "{o:?}");
    let r = Results::read(&json).unwrap();
    assert_eq!(r.libtorch.as_deref(), Some(libtorch::VERSION));
    assert!(
        libtorch::VERSION.starts_with(&r.torch),
        "{} {}",
        r.torch,
        libtorch::VERSION
    );
    assert_eq!(r.tch, harness::TCH_VERSION);
    // `auto` ran on the GPU where there is one, else on the CPU, and each case says which.
    let want = if libtorch::cuda_usable() {
        "cuda:0"
    } else {
        "cpu"
    };
    assert!(r.cases.iter().all(|c| c.device.as_deref() == Some(want)));
    // The fallback is said, on stderr (the run's own lines are a CPU run's).
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        stderr.contains("device auto: libtorch sees no CUDA device here"),
        !libtorch::cuda_usable(),
        "{stderr}"
    );
}

#[test]
fn device_cuda_without_a_gpu_is_one_error_before_any_case() {
    if libtorch::cuda_usable() {
        return; // a GPU machine: the bundle's run.sh checks the CUDA side
    }
    let dir = tempfile::tempdir().unwrap();
    let o = harness_cli(&dir.path().join("snaps"))
        .arg(super::fixtures().join("several"))
        .args(["--no-cache", "--device", "cuda", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(i32::from(exit::HARNESS_ERROR)),
        "{stderr}"
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--device cuda: libtorch sees no CUDA device here"),
        "{stderr}"
    );
    assert!(
        !stdout.contains("PASS") && !stdout.contains("ERROR"),
        "{stdout}"
    );
}

#[test]
fn a_case_that_asks_for_cuda_without_a_gpu_errors_alone() {
    if libtorch::cuda_usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = super::fixtures().join("models/fixtures.py");
    std::fs::copy(model, dir.path().join("m.py")).unwrap();
    for (name, check) in [("on_cuda", "check: {device: cuda}\n"), ("on_cpu", "")] {
        let text = format!(
            "model: {{source: m.py, entry: BranchAndFrozenWidth}}\n\
             inputs: [{{name: x, shape: [2, 4]}}]\n{check}"
        );
        std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
    }
    let json = dir.path().join("r.json");
    let o = harness_cli(&dir.path().join("snaps"))
        .arg(dir.path())
        .args([
            "--no-cache",
            "--no-snapshots",
            "--variants",
            "scripted",
            "--json",
        ])
        .arg(&json)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(i32::from(exit::HARNESS_ERROR)),
        "{o:?}"
    );
    let r = Results::read(&json).unwrap();
    let case = |n: &str| r.cases.iter().find(|c| c.name == n).unwrap();
    let cuda = case("on_cuda");
    assert_eq!(cuda.status, CaseStatus::Error);
    let message = &cuda.error.as_ref().unwrap().message;
    assert!(
        message.starts_with("check.device: cuda: libtorch sees no CUDA device"),
        "{message}"
    );
    assert_eq!(case("on_cpu").status, CaseStatus::Ran);
    assert_eq!(case("on_cpu").device.as_deref(), Some("cpu"));
}
