//! The pitfall ids: the public, stable names of what goes wrong when a model is traced,
//! scripted or exported. They appear in case files (`expect:`), in results.json and in reports, so a name
//! here is never renamed; each carries a one-line summary and a fix hint for the user.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::variant::Toolchain;

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
    DataDependentControlFlow,
    ExportError,
}

impl Pitfall {
    pub const ALL: [Pitfall; 14] = [
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
        Pitfall::DataDependentControlFlow,
        Pitfall::ExportError,
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
            Pitfall::DataDependentControlFlow => "data_dependent_control_flow",
            Pitfall::ExportError => "export_error",
        }
    }

    /// A concrete change that usually removes the pitfall from a variant of this toolchain:
    /// `torch.export`'s own tools for an exported program, TorchScript's otherwise.
    pub fn hint_for(self, toolchain: Toolchain) -> &'static str {
        match toolchain {
            Toolchain::Jit => self.hint(),
            Toolchain::Export => self.export_hint().unwrap_or_else(|| self.hint()),
        }
    }

    /// The hint for an exported program, where it differs from TorchScript's.
    fn export_hint(self) -> Option<&'static str> {
        Some(match self {
            Pitfall::ShapeSpecialization => {
                "torch.export could not keep a dim dynamic over the case's range: follow torch's \
                 suggested fix, or narrow the Dim's range (Dim(\"H\", min=33) when a size of 1 \
                 takes another path), or keep sizes symbolic in forward (x.shape[i] rather than \
                 Python ints); declare the dim fixed in the case if it truly is one"
            }
            Pitfall::DtypeSpecialization => {
                "torch.export specializes on input dtypes: export one program per dtype you \
                 serve, or cast inputs to the exported dtype before calling it"
            }
            Pitfall::DeviceSpecialization => {
                "torch.export records the device of tensors made in forward (device=cpu): \
                 create them with device=x.device or *_like factories, or export on the \
                 deployment device"
            }
            Pitfall::ValueSpecialization => {
                "a Python value computed from a tensor was baked into the exported program: \
                 keep it a tensor, or let export see it as a symbol (torch._check on .item() \
                 results)"
            }
            Pitfall::RuntimeError => {
                "the exported program raises on inputs eager accepts: compare its range \
                 constraints (ep.range_constraints) and guards with the case's dims"
            }
            Pitfall::OutputMismatch => {
                "compare the exported graph (ep.graph_module.code) with the eager source around \
                 the diverging output; torch.export.draft_export(model, args) reports what it \
                 assumed"
            }
            _ => return None,
        })
    }

    /// A concrete change that usually removes the pitfall (TorchScript's words; see
    /// [`Pitfall::hint_for`]).
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
            Pitfall::DataDependentControlFlow => {
                "torch.export cannot branch on tensor values: rewrite the `if` with \
                 torch.cond(pred, true_fn, false_fn, operands) or torch.where; for a size \
                 computed from data, state what holds with torch._check(...) or \
                 torch._check_is_size(...); or move the branch out of the exported model"
            }
            Pitfall::ExportError => {
                "make the flagged line capturable by torch.export (no numpy or Python side \
                 effects on tensor data, no unsupported ops), or run \
                 torch.export.draft_export(model, args) to list every problem at once"
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
            assert!(!p.hint_for(Toolchain::Export).is_empty());
        }
    }
}
