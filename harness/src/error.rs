//! Error kinds: why a case could not be judged, as one list shared by the Rust side and the
//! Python worker (`harness_worker/errors.py`, checked by a test here), and the error body that
//! carries a kind with its message, traceback and the user's source location.
//!
//! A divergence is never an error (it is a verdict); these are the harness's own failures and
//! the model's failures to load or run eagerly, which decide exit 2.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a case (or one step of it) failed. Serialized snake_case, in results.json and on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The case file does not parse or validate.
    CaseFile,
    /// A file the harness reads or writes.
    Io,
    /// The worker's replies do not follow the protocol.
    Protocol,
    /// The Python worker cannot be started.
    Worker,
    /// The case's worker process died (a signal, an exit).
    Crashed,
    /// The case took longer than its limit.
    Timeout,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A sample would exceed the element budget.
    TooLarge,
    /// A `--replay` file cannot be used.
    Replay,
    /// A `.code` snapshot cannot be read or written.
    Snapshot,
    /// libtorch cannot load a saved artifact.
    Load,
    /// Eager gave no usable output.
    Eager,
    /// Eager raised on a planned sample.
    EagerRaised,
    /// Exporting changed the eager model's parameters or buffers.
    EagerStateChanged,
    /// Eager's output holds something the harness cannot compare.
    UnsupportedOutput,
    /// The model's module cannot be imported.
    ModelImport,
    /// The model's entry is missing or not callable.
    ModelEntry,
    /// The model's constructor or factory raised.
    ModelConstruct,
    /// The variant's export failed, by method.
    TraceError,
    ScriptCompileError,
    ExportError,
    /// `torch.export` met a branch or size that depends on tensor data.
    ExportDataDependent,
    /// `torch.export` could not keep a dim dynamic over its range (a constraint violation).
    ExportConstraint,
    /// A shipped artifact (`artifact:`) does not load.
    ArtifactLoad,
    /// A `model.weights` file cannot be read or does not fit the model.
    ModelWeights,
    /// A device probe step.
    Device,
    /// A bug in the harness (a panic, an unexpected exception in the worker). Unknown kinds from
    /// a newer worker read as this.
    #[serde(other)]
    Internal,
}

impl ErrorKind {
    /// The snake_case name, as in results.json.
    pub fn as_str(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// An error as the worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default)]
    pub traceback: Vec<String>,
    /// The user's source location, when the worker found one (script errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_line: Option<String>,
}

impl ErrorBody {
    /// An error of this kind with a message and nothing else (no traceback, no location).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            kind,
            message: message.into(),
            traceback: Vec::new(),
            file: None,
            line: None,
            source_line: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds the worker declares (`    NAME = "value"` lines of its ErrorKind class).
    fn worker_kinds() -> Vec<String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/python/harness_worker/errors.py"
        );
        let text = std::fs::read_to_string(path).expect("the worker's errors.py");
        let class = text
            .split("class ErrorKind")
            .nth(1)
            .expect("errors.py defines ErrorKind");
        let re = regex::Regex::new(r#"^    [A-Z_]+ = "([a-z_]+)"$"#).unwrap();
        class
            .lines()
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .filter_map(|l| re.captures(l).map(|c| c[1].to_string()))
            .collect()
    }

    #[test]
    fn every_worker_kind_is_a_rust_kind() {
        let kinds = worker_kinds();
        assert!(kinds.len() >= 5, "parsed too few kinds: {kinds:?}");
        for k in kinds {
            let parsed: ErrorKind = serde_json::from_value(serde_json::json!(k)).unwrap();
            assert_eq!(
                parsed.as_str(),
                k,
                "the worker's kind `{k}` is not a Rust ErrorKind"
            );
        }
    }

    #[test]
    fn unknown_kinds_read_as_internal() {
        let k: ErrorKind = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(k, ErrorKind::Internal);
        assert_eq!(
            ErrorKind::ScriptCompileError.to_string(),
            "script_compile_error"
        );
    }
}
