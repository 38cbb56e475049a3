//! The variants a case checks against eager, as data.
//!
//! A variant is one way a model leaves Python: `torch.jit.trace`, `torch.jit.script`, and
//! whatever [`DEFINITIONS`] lists next. Its [`Definition`] is the only place that says how the
//! worker makes it (an export *method* of the worker's `variants.py` with options), where it runs,
//! what its artifact is called, and what diagnosis may say about it. Everything else (the runner,
//! comparison, results, console, report, JUnit, snapshots, the cache) iterates over the variants
//! a case declares and asks their definitions; nothing outside this file names one.
//!
//! Adding a variant: one entry in [`DEFINITIONS`] here, and (for a new method) one exporter in
//! the worker's `variants.py`. Its results appear under a new key of results.json.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pitfall::Pitfall;

/// Where a variant's artifact runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Loaded with `tch::CModule` and run in libtorch from Rust, as a C++ deployment would.
    Libtorch,
    /// Loaded back from its saved file and run in the worker's Python: a `torch.export` program
    /// (`ExportedProgram.module()`), for which tch has no runtime.
    Worker,
}

/// The toolchain a variant comes from: it decides the words of a finding's fix hint (a
/// TorchScript fix is no fix for an exported program).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toolchain {
    /// `torch.jit`: trace, script, freeze, optimize_for_inference, a shipped `.pt`.
    Jit,
    /// `torch.export`.
    Export,
}

/// Everything the harness knows about one variant.
#[derive(Debug)]
pub struct Definition {
    /// The name in case files, results.json, snapshots (`<case>__<name>.snap`) and artifacts
    /// (`<name>.pt`).
    pub name: &'static str,
    /// The worker's export method (`trace`, `script`; see `harness_worker/variants.py`).
    pub method: &'static str,
    /// Options passed to the method, as a JSON object.
    pub options: &'static str,
    pub runtime: Runtime,
    pub toolchain: Toolchain,
    /// The method takes the case's dims as its dynamic shapes (`dims` and `shapes` options).
    pub dynamic_dims: bool,
    /// Its artifact can be run on another device (the device probe); an AOTInductor package is
    /// compiled for the one it was made on.
    pub portable: bool,
    /// Checked when a case does not list its variants.
    pub default: bool,
    /// The export recorded one execution (tracing): data-dependent control flow, frozen values
    /// and shapes can be baked in, and diagnosis traces again on a failing input to tell them
    /// apart.
    pub records_one_run: bool,
    /// The harness made it on its trace input `s0`: a divergence there is no specialization.
    /// A shipped file was made on an input nobody knows.
    pub made_on_trace_input: bool,
    /// The pitfall a failed export is, and how to say it.
    pub export_pitfall: Pitfall,
    pub export_failed: &'static str,
    /// The variant whose `.code` this one's is diffed against (`None`: no diff).
    pub diff_base: Option<&'static str>,
    /// How the snapshotted `.code` is made, for the `.snap` header.
    pub snapshot_expression: &'static str,
}

/// Every variant the harness can check, in the order results list them.
pub static DEFINITIONS: &[Definition] = &[
    Definition {
        name: "traced",
        method: "trace",
        options: "{}",
        runtime: Runtime::Libtorch,
        toolchain: Toolchain::Jit,
        dynamic_dims: false,
        portable: true,
        default: true,
        records_one_run: true,
        made_on_trace_input: true,
        export_pitfall: Pitfall::TraceError,
        export_failed: "torch.jit.trace failed (or its result could not be saved)",
        diff_base: None,
        snapshot_expression: "torch.jit.trace(model, trace_input).code_with_constants",
    },
    Definition {
        name: "scripted",
        method: "script",
        options: "{}",
        runtime: Runtime::Libtorch,
        toolchain: Toolchain::Jit,
        dynamic_dims: false,
        portable: true,
        default: true,
        records_one_run: false,
        made_on_trace_input: true,
        export_pitfall: Pitfall::ScriptCompileError,
        export_failed: "torch.jit.script failed (or its result could not be saved)",
        diff_base: Some("traced"),
        snapshot_expression: "torch.jit.script(model).code_with_constants",
    },
    Definition {
        name: "frozen",
        method: "freeze",
        options: "{}",
        runtime: Runtime::Libtorch,
        toolchain: Toolchain::Jit,
        dynamic_dims: false,
        portable: true,
        default: false,
        records_one_run: false,
        made_on_trace_input: true,
        export_pitfall: Pitfall::ScriptCompileError,
        export_failed: "torch.jit.freeze(torch.jit.script(model)) failed (or its result could not \
                        be saved)",
        diff_base: Some("scripted"),
        snapshot_expression: "torch.jit.freeze(torch.jit.script(model)).code_with_constants",
    },
    Definition {
        name: "optimized",
        method: "optimize",
        options: "{}",
        runtime: Runtime::Libtorch,
        toolchain: Toolchain::Jit,
        dynamic_dims: false,
        portable: true,
        default: false,
        records_one_run: false,
        made_on_trace_input: true,
        export_pitfall: Pitfall::ScriptCompileError,
        export_failed:
            "torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(model))) \
                        failed (or its result could not be saved)",
        diff_base: Some("scripted"),
        snapshot_expression: "torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(\
                              model))).code_with_constants",
    },
    Definition {
        name: "shipped",
        method: "artifact",
        options: "{}",
        runtime: Runtime::Libtorch,
        toolchain: Toolchain::Jit,
        dynamic_dims: false,
        portable: true,
        // Checked when the case names an `artifact:` file (and only then).
        default: false,
        // A shipped artifact is most often a trace: diagnosis traces the eager model again on a
        // failing input to tell a recorded branch from a frozen value or shape.
        records_one_run: true,
        made_on_trace_input: false,
        export_pitfall: Pitfall::ArtifactIncompatible,
        export_failed: "the shipped artifact does not load in this torch's libtorch",
        diff_base: Some("traced"),
        snapshot_expression: "torch.jit.load(artifact).code_with_constants",
    },
    Definition {
        name: "exported",
        method: "export",
        options: "{}",
        runtime: Runtime::Worker,
        toolchain: Toolchain::Export,
        dynamic_dims: true,
        portable: true,
        default: false,
        records_one_run: false,
        made_on_trace_input: true,
        export_pitfall: Pitfall::ExportError,
        export_failed: "torch.export.export failed (or its program could not be saved)",
        // An FX graph and TorchScript code share no lines worth diffing.
        diff_base: None,
        snapshot_expression: "torch.export.export(model, trace_input, dynamic_shapes=<a Dim per \
                              case dim>).graph_module.code, with its range constraints",
    },
    Definition {
        name: "aoti",
        method: "aoti",
        options: "{}",
        runtime: Runtime::Worker,
        toolchain: Toolchain::Export,
        dynamic_dims: true,
        portable: false,
        default: false,
        records_one_run: false,
        made_on_trace_input: true,
        export_pitfall: Pitfall::ExportError,
        export_failed: "torch._inductor.aoti_compile_and_package(torch.export.export(...)) failed",
        // The graph it compiles is the exported one: the same code.
        diff_base: None,
        snapshot_expression: "torch.export.export(model, trace_input, dynamic_shapes=<a Dim per \
                              case dim>).graph_module.code, as AOTInductor compiles it",
    },
];

/// The worker's method that loads a shipped artifact instead of exporting.
const ARTIFACT_METHOD: &str = "artifact";

/// A variant: an index into [`DEFINITIONS`], ordered as they are, named in JSON and YAML.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant(u8);

impl Variant {
    /// Every variant, in definition order.
    pub fn all() -> impl Iterator<Item = Variant> {
        (0..DEFINITIONS.len()).map(|i| Variant(i as u8))
    }

    /// The variants a case checks when it does not list them.
    pub fn defaults() -> Vec<Variant> {
        Variant::all().filter(|v| v.def().default).collect()
    }

    /// The variant of this name.
    pub fn named(name: &str) -> Option<Variant> {
        Variant::all().find(|v| v.def().name == name)
    }

    pub fn def(self) -> &'static Definition {
        &DEFINITIONS[usize::from(self.0)]
    }

    pub fn as_str(self) -> &'static str {
        self.def().name
    }

    /// The variant this one's `.code` is diffed against.
    pub fn diff_base(self) -> Option<Variant> {
        self.def().diff_base.and_then(Variant::named)
    }

    /// The fix hint of an output mismatch in this variant when the generic one, which points at
    /// the traced and scripted `.code`, names another pair than its own diff (a frozen or
    /// optimized module is diffed against the plain script, a shipped file against the trace).
    /// `None`: the generic hint fits.
    pub fn output_mismatch_hint(self) -> Option<String> {
        let base = self.diff_base()?;
        if (base.as_str(), self.as_str()) == ("traced", "scripted") {
            return None; // the generic hint's own pair
        }
        let mut hint = format!(
            "compare the {base} and {self} .code (the diff below) with the eager source around \
             the diverging output"
        );
        if base.as_str() == "scripted" {
            hint.push_str(
                "; for a frozen or optimized module, torch.jit.freeze(..., \
                 optimize_numerics=False) tells whether freezing's folds changed it",
            );
        }
        Some(hint)
    }

    /// The error kind of a failed export (the worker's, for its methods).
    pub fn export_error_kind(self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self.def().export_pitfall {
            Pitfall::TraceError => ErrorKind::TraceError,
            Pitfall::ScriptCompileError => ErrorKind::ScriptCompileError,
            Pitfall::ArtifactIncompatible => ErrorKind::ArtifactLoad,
            _ => ErrorKind::ExportError,
        }
    }

    /// `traced`, `scripted`: the names a case file may use, for messages.
    pub fn names() -> String {
        Variant::all()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The export request's entry for this variant (`{"name", "method", "options"}`); a
    /// shipped artifact's method gets the file's `path` among its options.
    pub fn export_spec(self, artifact: Option<&std::path::Path>) -> serde_json::Value {
        let d = self.def();
        let mut options: serde_json::Value =
            serde_json::from_str(d.options).expect("a definition's options are a JSON object");
        if let (ARTIFACT_METHOD, Some(path)) = (d.method, artifact) {
            options["path"] = serde_json::json!(path);
        }
        serde_json::json!({"name": d.name, "method": d.method, "options": options})
    }

    /// Whether this variant runs a file the case names (`artifact:`) rather than an export.
    pub fn is_shipped(self) -> bool {
        self.def().method == ARTIFACT_METHOD
    }

    /// The variant a project (`harness.toml`'s `variants`) or a run (`--variants`) names for
    /// every case: any known one but `shipped`, which needs a case's own `artifact:`.
    pub fn for_every_case(name: &str) -> Result<Variant, String> {
        match Variant::named(name) {
            Some(v) if v.is_shipped() => Err(format!(
                "`{v}` cannot be chosen for every case: it runs the file a case's `artifact:` \
                 names, and joins the variants of each case that names one by itself"
            )),
            Some(v) => Ok(v),
            None => Err(format!(
                "unknown variant `{name}`, expected one of {}",
                Variant::names()
            )),
        }
    }

    /// A chosen list of variants, in definition order without repeats; it may not be empty.
    pub fn choice(mut chosen: Vec<Variant>) -> Result<Vec<Variant>, String> {
        if chosen.is_empty() {
            return Err(format!("expected at least one of {}", Variant::names()));
        }
        chosen.sort();
        chosen.dedup();
        Ok(chosen)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Variant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Variant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Variant, D::Error> {
        let name = String::deserialize(d)?;
        Variant::named(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown variant `{name}`, expected one of {}",
                Variant::names()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        let mut names = std::collections::BTreeSet::new();
        for v in Variant::all() {
            let d = v.def();
            assert!(names.insert(d.name), "{} is defined twice", d.name);
            assert!(v.export_spec(None)["options"].is_object(), "{}", d.name);
            if let Some(base) = d.diff_base {
                assert!(
                    Variant::named(base).is_some(),
                    "{}: no variant {base}",
                    d.name
                );
            }
        }
        assert!(!Variant::defaults().is_empty());
    }

    #[test]
    fn names_round_trip_and_order_follows_definitions() {
        for v in Variant::all() {
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Variant>(&json).unwrap(), v);
        }
        let all: Vec<Variant> = Variant::all().collect();
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(all, sorted);
        let err = serde_json::from_str::<Variant>("\"frozen_typo\"").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("unknown variant `frozen_typo`, expected one of `traced`"));
    }

    /// Frozen and optimized modules are diffed against the script, a shipped file against the
    /// trace: their output mismatch hint names that pair; the others keep the generic hint.
    #[test]
    fn output_mismatch_hints_name_the_variants_own_pair() {
        let hint = |name: &str| Variant::named(name).unwrap().output_mismatch_hint();
        for generic in ["traced", "scripted", "exported"] {
            assert_eq!(hint(generic), None, "{generic}");
        }
        assert_eq!(
            hint("shipped").unwrap(),
            "compare the traced and shipped .code (the diff below) with the eager source around \
             the diverging output"
        );
        assert_eq!(
            hint("frozen").unwrap(),
            "compare the scripted and frozen .code (the diff below) with the eager source around \
             the diverging output; for a frozen or optimized module, torch.jit.freeze(..., \
             optimize_numerics=False) tells whether freezing's folds changed it"
        );
        assert!(hint("optimized")
            .unwrap()
            .starts_with("compare the scripted and optimized .code (the diff below)"));
    }

    #[test]
    fn a_project_or_a_run_chooses_any_variant_but_shipped() {
        let [traced, scripted] = ["traced", "scripted"].map(|n| Variant::named(n).unwrap());
        assert_eq!(Variant::for_every_case("traced"), Ok(traced));
        let shipped = Variant::for_every_case("shipped").unwrap_err();
        assert!(shipped.starts_with("`shipped` cannot be chosen for every case"));
        assert_eq!(
            Variant::for_every_case("tensorrt").unwrap_err(),
            format!(
                "unknown variant `tensorrt`, expected one of {}",
                Variant::names()
            )
        );
        assert_eq!(
            Variant::choice(vec![scripted, traced, scripted]),
            Ok(vec![traced, scripted])
        );
        assert!(Variant::choice(Vec::new())
            .unwrap_err()
            .starts_with("expected at least one of `traced`"));
    }
}
