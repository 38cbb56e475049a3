//! The harness's engine: everything that needs libtorch.
//!
//! Samples become tensors (`materialize`), the variants the worker exported run in libtorch
//! through `tch` (`run`), their outputs become `Value` trees (`value`) compared with eager's
//! (`compare`), and a divergent sample is shrunk to a minimal counterexample (`shrink`).
//! `verify` runs the selected cases in jobs. Everything else (case files, the plan, the worker
//! client, diagnosis, results, reports, the CLI) is the core crate `harness`, which does not
//! depend on `tch`. See ARCHITECTURE.md.

// ErrorBody (the worker's error with its traceback) is the error of most calls here; it is
// moved once per failed case, so its size does not matter.
#![allow(clippy::result_large_err)]

pub mod compare;
pub mod libtorch;
pub mod materialize;
pub mod run;
pub mod shrink;
pub mod tensors;
pub mod value;
pub mod verify;
