//! The worker protocol's message types, shared by the worker client and the engine.
//!
//! Line-delimited JSON between the harness and the Python worker (`harness/python/
//! harness_worker/protocol.py`). These are wire types: results.json has its own types in
//! `results`, so a protocol change never changes the results schema by accident.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

pub use crate::error::{ErrorBody, ErrorKind};

/// The protocol version; the worker's `PROTOCOL` (harness_worker/protocol.py) must equal it,
/// and `cargo xtask tidy` checks it changes when the messages do. Version 2: `export` takes
/// variants as data (`{"name", "method", "options"}`) and replies `exports` by name.
pub const PROTOCOL_VERSION: u32 = 2;

/// The worker's JSON form of an output (see `worker.py`, `_encode`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum WireValue {
    Tensor {
        key: String,
    },
    TensorDesc {
        shape: Vec<i64>,
        dtype: String,
        device: String,
    },
    Int {
        v: i64,
    },
    /// `repr(float)`, so NaN and infinities survive JSON.
    Float {
        v: String,
    },
    Bool {
        v: bool,
    },
    Str {
        v: String,
    },
    None,
    Tuple {
        items: Vec<WireValue>,
    },
    List {
        items: Vec<WireValue>,
    },
    Dict {
        items: Vec<(WireValue, WireValue)>,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub torch: String,
    pub python: String,
    pub pid: u32,
}

/// What the worker says of a model it loaded.
#[derive(Debug, Clone, Deserialize)]
pub struct Loaded {
    pub class: String,
    /// The model source files the worker imported.
    pub files: Vec<PathBuf>,
}

/// One submodule's TorchScript code (`fc1`, `blocks.0.attn`), with the constants it names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleCode {
    pub name: String,
    pub code: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub constants: std::collections::BTreeMap<String, String>,
}

/// A warning raised while exporting, at the user's file and line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceWarning {
    pub category: String,
    pub message: String,
    pub file: String,
    pub line: u32,
    pub source_line: String,
    pub count: u32,
}

/// One variant's export, as the worker did it.
#[derive(Debug, Clone, Deserialize)]
pub struct Export {
    pub ok: bool,
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub code: Option<String>,
    /// The tensor constants `.code` refers to (`CONSTANTS.c0`), described, by name.
    #[serde(default)]
    pub constants: std::collections::BTreeMap<String, String>,
    /// Each submodule's code, in `named_modules` order.
    #[serde(default)]
    pub modules: Vec<ModuleCode>,
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub warnings: Vec<TraceWarning>,
    pub seconds: f64,
    /// What in the graph names a device (Device constants, `aten::cpu`/`cuda`/`device`), with
    /// the user's file:line; empty when nothing does.
    #[serde(default)]
    pub device_pins: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExportReply {
    /// Each requested variant's export, by name.
    pub exports: std::collections::BTreeMap<crate::variant::Variant, Export>,
    pub eager_state_changed: bool,
    #[serde(default)]
    pub evidence: StaticEvidence,
}

/// What the exported graphs show, without running them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StaticEvidence {
    #[serde(default)]
    pub traced_control_flow: Option<ControlFlow>,
    #[serde(default)]
    pub scripted_control_flow: Option<ControlFlow>,
    /// Constants in the traced graph, from the user's code, that the scripted graph lacks.
    #[serde(default)]
    pub traced_only_constants: Vec<GraphConstant>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlFlow {
    #[serde(rename = "if")]
    pub ifs: u32,
    #[serde(rename = "loop")]
    pub loops: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphConstant {
    #[serde(rename = "type")]
    pub ty: String,
    pub value: String,
    /// `file:line` in the user's code.
    #[serde(default)]
    pub r#where: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Tracing again on another input: did the recorded graph change?
#[derive(Debug, Clone, Deserialize)]
pub struct Retrace {
    pub traced: bool,
    /// The trace's time, as the worker timed it.
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub same_ops: bool,
    /// The new graph has other kinds of ops, not only more or fewer of the same.
    #[serde(default)]
    pub kinds_differ: bool,
    #[serde(default)]
    pub ops_before: usize,
    #[serde(default)]
    pub ops_after: usize,
    #[serde(default)]
    pub first_difference: Option<OpDifference>,
    #[serde(default)]
    pub changed_constants: Vec<ChangedConstant>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OpDifference {
    pub index: usize,
    pub before: Option<String>,
    pub after: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChangedConstant {
    #[serde(rename = "type")]
    pub ty: String,
    pub before: String,
    pub after: String,
    pub r#where: Option<String>,
}

/// One run on the probe device: an output description or an error.
#[derive(Debug, Clone, Deserialize)]
pub struct ProbeRun {
    pub ok: bool,
    pub output: Option<WireValue>,
    pub error: Option<ErrorBody>,
}

/// Eager on one sample.
#[derive(Debug, Clone, Deserialize)]
pub struct EagerResult {
    pub id: String,
    pub ok: bool,
    pub output: Option<WireValue>,
    pub path: Option<PathBuf>,
    pub seconds: Option<f64>,
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EagerReply {
    pub results: Vec<EagerResult>,
}

/// Where a sample's inputs are: a tensor file and the sample's id, which prefixes the names of
/// its tensors there (`s3/x`, `s3/images.0`); one file holds all of a case's samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRef {
    pub file: PathBuf,
    pub sample: String,
}

/// What a model load request names.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRequest<'a> {
    pub case: &'a str,
    pub source: Option<&'a Path>,
    #[serde(rename = "import")]
    pub import: Option<&'a str>,
    pub entry: &'a str,
    pub kwargs: &'a std::collections::BTreeMap<String, Json>,
    pub eval: bool,
    pub seed: u64,
}
