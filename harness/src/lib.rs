//! The trace-versus-script verification harness's core: everything that does not need libtorch.
//!
//! A case file (`case`) pairs a model with input generators; the `plan` turns it into samples;
//! the Python `worker` loads the model, exports its variants and runs eager; the engine crate
//! (`harness-engine`, the only one that links `tch`) runs the artifacts in libtorch and compares
//! them with eager; `diagnose` names the pitfall; `snapshot` keeps each variant's normalized
//! `.code` as a reviewed insta snapshot; `results` records verdicts as results.json and decides
//! the exit code; `console` prints them; `report` renders saved results as HTML and JUnit XML
//! and compares them with a baseline. This crate does not depend on `tch`: the `harness` binary
//! cannot load libtorch. See ARCHITECTURE.md for the pipeline and its invariants.

// ErrorBody (the worker's error with its traceback) is the error of most calls here; it is
// moved once per failed case, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod attention;
pub mod cache;
pub mod case;
pub mod cli;
pub mod console;
pub mod diagnose;
pub mod error;
pub mod interrupt;
pub mod options;
pub mod pitfall;
pub mod plan;
pub mod probe;
pub mod project;
pub mod protocol;
pub mod report;
pub mod results;
pub mod snapshot;
pub mod timeline;
pub mod torch_lines;
pub mod variant;
pub mod verify;
pub mod worker;

/// The torch release this build's engine links: the torch of the Python environment it was
/// built with (read by `build.rs`, one of [`torch_lines::LINES`]).
pub const TORCH_VERSION: &str = env!("HARNESS_TORCH_VERSION");

/// The tch crate the engine links for [`TORCH_VERSION`] (its line's pin).
pub const TCH_VERSION: &str = torch_line().tch;

/// The line of [`TORCH_VERSION`] (the build script admits no other torch).
pub const fn torch_line() -> &'static torch_lines::TorchLine {
    let mut i = 0;
    while i < torch_lines::LINES.len() {
        if torch_lines::same_release(TORCH_VERSION, torch_lines::LINES[i].release) {
            return &torch_lines::LINES[i];
        }
        i += 1;
    }
    panic!("HARNESS_TORCH_VERSION is not in torch_lines::LINES")
}

/// How the user runs the harness, for the commands messages suggest (`harness verify --accept`,
/// a replay): `HARNESS_COMMAND` when set (`cargo xtask` sets `cargo xtask`), else `harness`.
pub fn command() -> String {
    std::env::var("HARNESS_COMMAND")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| "harness".into())
}
