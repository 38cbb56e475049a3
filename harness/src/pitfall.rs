//! The pitfall ids: the public, stable names of what goes wrong when a model is traced or
//! scripted. They appear in case files (`expect:`), in results.json and in reports, so a name
//! here is never renamed; each carries a one-line summary and a fix hint for the user.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pitfall {
    ControlFlowErasure,
    ShapeSpecialization,
    ValueSpecialization,
    DeviceSpecialization,
    DtypeSpecialization,
    NondeterministicEager,
    ScriptCompileError,
    TraceError,
    RuntimeError,
    OutputMismatch,
    ContainerMismatch,
    ArtifactIncompatible,
}

impl Pitfall {
    pub const ALL: [Pitfall; 12] = [
        Pitfall::ControlFlowErasure,
        Pitfall::ShapeSpecialization,
        Pitfall::ValueSpecialization,
        Pitfall::DeviceSpecialization,
        Pitfall::DtypeSpecialization,
        Pitfall::NondeterministicEager,
        Pitfall::ScriptCompileError,
        Pitfall::TraceError,
        Pitfall::RuntimeError,
        Pitfall::OutputMismatch,
        Pitfall::ContainerMismatch,
        Pitfall::ArtifactIncompatible,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Pitfall::ControlFlowErasure => "control_flow_erasure",
            Pitfall::ShapeSpecialization => "shape_specialization",
            Pitfall::ValueSpecialization => "value_specialization",
            Pitfall::DeviceSpecialization => "device_specialization",
            Pitfall::DtypeSpecialization => "dtype_specialization",
            Pitfall::NondeterministicEager => "nondeterministic_eager",
            Pitfall::ScriptCompileError => "script_compile_error",
            Pitfall::TraceError => "trace_error",
            Pitfall::RuntimeError => "runtime_error",
            Pitfall::OutputMismatch => "output_mismatch",
            Pitfall::ContainerMismatch => "container_mismatch",
            Pitfall::ArtifactIncompatible => "artifact_incompatible",
        }
    }

    /// A concrete change that usually removes the pitfall.
    pub fn hint(self) -> &'static str {
        match self {
            Pitfall::ControlFlowErasure => {
                "tracing records one branch: script the model, or wrap the data-dependent part \
                 in a function decorated with @torch.jit.script_if_tracing"
            }
            Pitfall::ShapeSpecialization => {
                "use x.shape[0] / x.size(0) directly in tensor ops instead of len(x) or \
                 int(...); build shape tensors with torch.stack of sizes, not torch.tensor; or \
                 script the model"
            }
            Pitfall::ValueSpecialization => {
                "keep values as tensors: avoid .item(), int(t), float(t), .tolist() and numpy \
                 round trips in forward, or script the model"
            }
            Pitfall::DeviceSpecialization => {
                "create tensors with device=x.device under scripting (tracing records the \
                 trace-time device as a constant), or use *_like factories"
            }
            Pitfall::DtypeSpecialization => {
                "avoid branches on x.dtype and dtype=x.dtype factories in traced code; use \
                 *_like factories or .to(x) so the dtype follows the input, or script the model"
            }
            Pitfall::NondeterministicEager => {
                "eager gives different outputs for the same input: call .eval() (dropout, batch \
                 statistics) or remove random ops from forward before judging the export"
            }
            Pitfall::ScriptCompileError => {
                "make the flagged line TorchScript-compatible (type annotations, Optional \
                 refinement, no unsupported Python), or mark it @torch.jit.ignore / use tracing"
            }
            Pitfall::TraceError => {
                "return tensors or (nested) tuples of tensors from forward, or trace with \
                 strict=False for dict/list outputs, or script the model"
            }
            Pitfall::RuntimeError => {
                "the exported artifact raises on inputs eager accepts: look for shapes or \
                 devices baked into the trace"
            }
            Pitfall::OutputMismatch => {
                "compare the traced and scripted .code with the eager source around the \
                 diverging output"
            }
            Pitfall::ContainerMismatch => {
                "return the container eager returns: annotate forward's return type (Tuple[...] \
                 or List[...]) and convert before returning (tuple(xs)); a C++ caller unpacks \
                 with toTuple() or toList() and the other one throws"
            }
            Pitfall::ArtifactIncompatible => {
                "the shipped artifact does not load in this libtorch: export it again with the \
                 torch your deployment links (ops and the file format are tied to the version), \
                 or keep the libtorch it was made for"
            }
        }
    }
}

impl fmt::Display for Pitfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_serde() {
        for p in Pitfall::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.id()));
            assert_eq!(serde_json::from_str::<Pitfall>(&json).unwrap(), p);
            assert!(!p.hint().is_empty());
        }
    }
}
