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
/// variants as data (`{"name", "method", "options"}`) and replies `exports` by name. Version 3:
/// `hello` replies the site folders, `load`'s files are every user file it pulled in, and a
/// tensor leaf of another form than its dtype says which dtype it stands for. Version 4: input
/// names say their kind (`k:int`, `r:float`, `flag:bool`, `mask:none`; a trailing `=` passes one
/// by keyword, see `InputSpec::wire_name`), and each export says the arguments its forward takes.
/// Version 5: `load` carries `weights`, a re-trace names the variant it explains, and the
/// `artifact` export method runs a shipped file. Version 6: both. Version 7: the `export` method
/// (torch.export, with `dims` and `shapes` options) and its error kinds, and `eager` runs a saved
/// program (`program`).
pub const PROTOCOL_VERSION: u32 = 9;

/// The worker's JSON form of an output (see `harness_worker/eager.py`, `encode`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum WireValue {
    Tensor {
        key: String,
        /// The dtype the tensor stands for, when the file holds another form of it (complex as
        /// real and imaginary parts, wide unsigned ints as int64, float8 as float32; version 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dtype: Option<String>,
        /// Where the output was, when not on the CPU (`cuda:0`; version 9): the file holds a
        /// CPU copy.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
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
    /// The folders installed libraries live in (version 3).
    #[serde(default)]
    pub site: Vec<PathBuf>,
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
    /// The names of the arguments the artifact's forward takes, in order, without `self`
    /// (version 4). `None`: not known (every input, in the case's order).
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// The plain default values (None, bool, int, float, str) of forward's arguments, by name
    /// (version 4): libtorch gets them where the case leaves an argument out.
    #[serde(default)]
    pub defaults: std::collections::BTreeMap<String, WireValue>,
    /// The inputs the export bound to their trace-time values (version 4): a trace takes scalar,
    /// `None` and keyword inputs so, and its forward only the tensors.
    #[serde(default)]
    pub bound: Vec<String>,
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
pub struct LoadRequest {
    pub case: String,
    pub source: Option<PathBuf>,
    #[serde(rename = "import")]
    pub import: Option<String>,
    pub entry: String,
    pub kwargs: std::collections::BTreeMap<String, Json>,
    pub eval: bool,
    pub seed: u64,
    /// A state_dict file to load after construction.
    pub weights: Option<PathBuf>,
    /// Missing or unexpected keys in `weights` are an error.
    pub weights_strict: bool,
    /// The case's device when not the CPU (`cuda`; version 9): the model, its inputs and
    /// every export and eager run of the case go there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

/// A request, tagged by its `op`; [`Envelope`] adds the id. Every op since version 1 except
/// `export`'s `variants`, which version 2 made data.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request<'a> {
    /// The handshake: the worker answers with its own version ([`Hello`]).
    Hello { protocol: u32 },
    /// Fork a child of the fork server for one case (`{"pid"}`); with its model module
    /// (version 8), from that module's zygote (imported once for the cases that share it).
    Fork {
        #[serde(skip_serializing_if = "Option::is_none")]
        module: Option<&'a ModuleRef>,
    },
    /// Fork the probe server, which talks through these three FIFOs (`{"pid"}`).
    ProbeServer {
        requests: &'a Path,
        replies: &'a Path,
        stderr: &'a Path,
    },
    /// Import and construct the model ([`Loaded`]).
    Load(&'a LoadRequest),
    /// Export each variant ([`ExportReply`]).
    Export {
        case: &'a str,
        input: &'a SampleRef,
        names: &'a [String],
        variants: Vec<serde_json::Value>,
        dims: &'a std::collections::BTreeMap<String, i64>,
        out_dir: &'a Path,
    },
    /// Trace again on another input, and compare with this variant's graph ([`Retrace`]).
    Retrace {
        case: &'a str,
        input: &'a SampleRef,
        names: &'a [String],
        variant: &'a str,
    },
    /// Eager and the given artifacts on another device (a map of [`ProbeRun`]s and `seconds`).
    DeviceProbe {
        case: &'a str,
        input: &'a SampleRef,
        names: &'a [String],
        device: &'a str,
        artifacts: std::collections::BTreeMap<&'a str, &'a Path>,
    },
    /// Eager on each sample ([`EagerReply`]).
    Eager {
        case: &'a str,
        samples: Vec<EagerSample<'a>>,
        names: &'a [String],
        out_dir: &'a Path,
        /// A saved program to run instead of eager (version 7).
        #[serde(skip_serializing_if = "Option::is_none")]
        program: Option<ProgramRef<'a>>,
    },
    /// End the case: its child exits, saying which installed modules it imported ([`Ended`]).
    End {},
    /// Import these installed modules in the fork server, so the cases' children that follow
    /// start with them (version 8; [`Preloaded`]).
    Preload { modules: &'a [String] },
    /// Stop the server.
    Shutdown {},
}

/// A case's model module, as `fork` names it (version 8): `{"source": path}` or
/// `{"import": name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleRef {
    Source(PathBuf),
    Import(String),
}

/// The reply to `end` (version 8): the installed modules (libraries, torch's own, the standard
/// library; never the user's) the case's child imported that its fork server had not, in import
/// order.
#[derive(Debug, Default, Deserialize)]
pub struct Ended {
    #[serde(default)]
    pub libraries: Vec<String>,
}

/// The reply to `preload`: how many of the modules the server imported, and its time.
#[derive(Debug, Deserialize)]
pub struct Preloaded {
    pub imported: usize,
    pub seconds: f64,
}

impl Request<'_> {
    /// The op's name, for messages.
    pub fn op(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("op")?.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A saved program the worker runs instead of eager: its file, and the export method that made
/// it (`export`: a torch.export program; `aoti`: an AOTInductor package), which says how it is
/// loaded.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProgramRef<'a> {
    pub path: &'a Path,
    pub method: &'a str,
}

/// One sample of an eager request.
#[derive(Debug, Serialize)]
pub struct EagerSample<'a> {
    pub id: &'a str,
    pub input: &'a SampleRef,
    /// Run with uninitialized memory filled (the determinism repeat; version 3).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fill_uninitialized: bool,
}

/// A request on the wire: its id and the request's fields.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: u64,
    #[serde(flatten)]
    pub request: &'a Request<'a>,
}

/// What every reply line starts with: the request's id, whether it succeeded, and its error.
#[derive(Debug, Deserialize)]
pub struct ReplyHead {
    pub id: Option<u64>,
    #[serde(default)]
    pub ok: bool,
    pub error: Option<ErrorBody>,
}

/// A line the server sends on its own, not as a reply.
#[derive(Debug, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The case's child ended otherwise than by `end`.
    ChildExit {
        pid: Option<u32>,
        code: Option<i64>,
        signal: Option<i64>,
    },
}

/// The `{"pid"}` reply of `fork` and `probe_server`.
#[derive(Debug, Deserialize)]
pub struct Forked {
    pub pid: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_by_op_with_the_id_beside() {
        let input = SampleRef {
            file: "s.safetensors".into(),
            sample: "s0".into(),
        };
        let names = vec!["x".to_string()];
        let req = Request::Retrace {
            case: "c",
            input: &input,
            names: &names,
            variant: "traced",
        };
        let line = serde_json::to_value(Envelope {
            id: 7,
            request: &req,
        })
        .unwrap();
        assert_eq!(
            line,
            serde_json::json!({"op": "retrace", "id": 7, "case": "c",
                "input": {"file": "s.safetensors", "sample": "s0"}, "names": ["x"], "variant": "traced"})
        );
        assert_eq!(req.op(), "retrace");
        assert_eq!(
            serde_json::to_value(Envelope {
                id: 1,
                request: &Request::End {}
            })
            .unwrap(),
            serde_json::json!({"op": "end", "id": 1})
        );
    }

    #[test]
    fn events_and_reply_heads_parse() {
        let e: Event =
            serde_json::from_str(r#"{"event": "child_exit", "pid": 3, "signal": 11}"#).unwrap();
        assert!(matches!(
            e,
            Event::ChildExit {
                signal: Some(11),
                code: None,
                ..
            }
        ));
        let h: ReplyHead = serde_json::from_str(
            r#"{"id": 2, "ok": false, "error": {"kind": "model_import", "message": "m"}}"#,
        )
        .unwrap();
        assert_eq!(h.error.unwrap().kind, ErrorKind::ModelImport);
    }
}
