//! Diagnosis: which pitfall broke a variant, with evidence and a fix hint.
//!
//! Dynamic evidence decides; static evidence explains. The decision reads which sample groups
//! diverged: the trace input itself (a variant bug or nondeterminism, never specialization),
//! trace shapes with new values (control flow or value specialization, told apart by tracing
//! again on the failing input: a different op sequence means another path was recorded, the
//! same ops with other constants mean a frozen value), new shapes (shape specialization), other
//! dtypes on the trace input's values (dtype specialization) and a second device (device
//! specialization, only where eager itself runs there). Tracer warnings at the user's lines and
//! constants that only the traced graph holds are attached to the findings they explain; they
//! never decide, since real models warn while tracing and are still correct.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::case::Variant;
use crate::error::ErrorKind;
use crate::pitfall::Pitfall;
use crate::plan::Group;
use crate::variant::{Runtime, Toolchain};
use crate::worker::{ErrorBody, Retrace, StaticEvidence, TraceWarning};

/// How an output differs from eager's, by the first mismatch (see the engine's `compare`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MismatchKind {
    Structure,
    /// A tuple for a list (or back), or other dict keys.
    Container,
    Shape,
    Dtype,
    Device,
    Values,
}

/// How one sample went for one variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFailure {
    Mismatch(MismatchKind),
    Raised,
}

/// What the device probe saw for one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceCheck {
    /// The probe's device: `cuda`, `cpu` (for a case run on CUDA) or `meta`.
    pub device: String,
    /// Eager ran there; the variant failed or disagreed on device, shape or dtype.
    pub flagged: bool,
    pub detail: String,
}

/// Everything observed about one variant, for the diagnosis.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub variant: Variant,
    pub export_error: Option<&'a ErrorBody>,
    /// Exported, but libtorch could not load the artifact (the message).
    pub load_error: Option<&'a str>,
    /// The first sample the variant raised on, and the message.
    pub first_raise: Option<(&'a str, &'a str)>,
    /// One entry per sample run, in plan order.
    pub samples: Vec<(Group, Option<SampleFailure>)>,
    pub warnings: &'a [TraceWarning],
    pub evidence: &'a StaticEvidence,
    /// Set when eager gave two different outputs for one input.
    pub nondeterministic: Option<String>,
    pub device: Option<&'a DeviceCheck>,
    /// Tracing again on the first failing trace-shape sample (traced only).
    pub retrace_values: Option<(&'a str, &'a Retrace)>,
    /// Tracing again on the first failing new-shape sample (traced only).
    pub retrace_shapes: Option<(&'a str, &'a Retrace)>,
}

/// One pitfall found in one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub pitfall: Pitfall,
    pub summary: String,
    pub evidence: Vec<String>,
    /// `file:line` in the user's code, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub hint: String,
}

impl Finding {
    fn new(pitfall: Pitfall, summary: String) -> Finding {
        Finding {
            pitfall,
            summary,
            evidence: Vec::new(),
            location: None,
            hint: pitfall.hint().into(),
        }
    }
}

/// Per group: samples run and samples that diverged.
pub fn group_stats(samples: &[(Group, Option<SampleFailure>)]) -> BTreeMap<String, (usize, usize)> {
    let mut stats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (g, f) in samples {
        let e = stats.entry(String::from(g.clone())).or_default();
        e.0 += 1;
        e.1 += usize::from(f.is_some());
    }
    stats
}

fn stats_line(samples: &[(Group, Option<SampleFailure>)]) -> String {
    let stats = group_stats(samples);
    let fails: Vec<String> = stats
        .iter()
        .filter(|(_, (_, f))| *f > 0)
        .map(|(g, (n, f))| format!("{g} {f}/{n}"))
        .collect();
    let passes: Vec<&str> = stats
        .iter()
        .filter(|(_, (_, f))| *f == 0)
        .map(|(g, _)| g.as_str())
        .collect();
    let mut line = format!("diverges on {}", fails.join(", "));
    if !passes.is_empty() {
        line.push_str(&format!("; matches on {}", passes.join(", ")));
    }
    line
}

/// Every sample diverges, and they span more than one group (a replay's two samples of one
/// group do not count): a variant made elsewhere then computes something else than this eager
/// model, which no specialization explains.
pub fn diverges_everywhere(samples: &[(Group, Option<SampleFailure>)]) -> bool {
    let groups: std::collections::BTreeSet<&Group> = samples.iter().map(|(g, _)| g).collect();
    groups.len() > 1 && samples.iter().all(|(_, f)| f.is_some())
}

/// The findings for one variant, each generic fix hint in the words of the variant (a hint read
/// from a known message is kept).
pub fn diagnose(obs: &Observation<'_>) -> Vec<Finding> {
    let mut findings = findings(obs);
    for f in &mut findings {
        if f.hint == f.pitfall.hint() {
            f.hint = variant_hint(f.pitfall, obs.variant);
        }
    }
    findings
}

/// A pitfall's generic hint for one variant: in the words of its toolchain, and for an output
/// mismatch naming the variant's own `.code` pair where the generic words name another.
fn variant_hint(pitfall: Pitfall, variant: Variant) -> String {
    let own = variant
        .output_mismatch_hint()
        .filter(|_| pitfall == Pitfall::OutputMismatch);
    own.unwrap_or_else(|| pitfall.hint_for(variant.def().toolchain).into())
}

/// The pitfall a failed export is: what the worker made of torch's exception (torch.export's
/// data-dependent guards and constraint violations), else the variant's own.
fn export_pitfall(variant: Variant, err: &ErrorBody) -> Pitfall {
    match err.kind {
        ErrorKind::ExportDataDependent => Pitfall::DataDependentControlFlow,
        ErrorKind::ExportConstraint => Pitfall::ShapeSpecialization,
        _ => variant.def().export_pitfall,
    }
}

fn findings(obs: &Observation<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(err) = obs.export_error {
        let (pitfall, what) = (
            export_pitfall(obs.variant, err),
            obs.variant.def().export_failed,
        );
        let mut f = Finding::new(pitfall, format!("{what}: {}", first_line(&err.message)));
        if let (Some(file), Some(line)) = (&err.file, err.line) {
            f.location = Some(format!("{}:{line}", short_path(file)));
            if let Some(src) = err.source_line.as_deref().filter(|s| !s.is_empty()) {
                f.evidence
                    .push(format!("at {}:{line}: `{src}`", short_path(file)));
            }
        }
        f.evidence.extend(
            err.message
                .lines()
                .skip(1)
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(8)
                .map(str::to_string),
        );
        if err.message.contains("crashed its process") {
            f.evidence.push(
                "the export died inside torch, with no Python exception to report: the other \
                 variants were exported and judged in a fresh process; a known trigger is an op \
                 that raises inside a try/except in forward while tracing"
                    .into(),
            );
        }
        if let Some(h) = export_hint(&err.message) {
            f.hint = h.into();
        }
        findings.push(f);
        return findings;
    }
    if let Some(message) = obs.load_error {
        let loader = match obs.variant.def().runtime {
            Runtime::Libtorch => "libtorch",
            Runtime::Worker => "the worker",
        };
        let mut f = Finding::new(
            Pitfall::RuntimeError,
            format!(
                "{loader} cannot load the saved artifact: {}",
                load_summary(message)
            ),
        );
        f.evidence.extend(
            message
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.trim().is_empty())
                .take(8)
                .map(str::to_string),
        );
        if let Some(h) = runtime_hint(message) {
            f.hint = h.into();
        }
        findings.push(f);
        return findings;
    }
    if let Some(detail) = &obs.nondeterministic {
        let mut f = Finding::new(
            Pitfall::NondeterministicEager,
            "eager gives different outputs for the same input, so no variant can be judged".into(),
        );
        f.evidence.push(detail.clone());
        findings.push(f);
        return findings;
    }

    let failed = |pred: &dyn Fn(&Group) -> bool| {
        obs.samples
            .iter()
            .filter(|(g, f)| pred(g) && f.is_some())
            .count()
    };
    let shape_mismatch_on_new_shapes = obs.samples.iter().any(|(g, f)| {
        matches!(g, Group::Dim(_) | Group::Joint)
            && matches!(
                f,
                Some(SampleFailure::Mismatch(
                    MismatchKind::Shape | MismatchKind::Structure
                ))
            )
    });
    // A variant made elsewhere (a shipped file) was not made on the harness's trace input: that
    // input is one more sample at the trace shapes, unless every sample diverges (the file
    // computes something else: other weights or code, no specialization).
    let made_here = obs.variant.def().made_on_trace_input;
    let trace_is_values = !made_here && !diverges_everywhere(&obs.samples);
    let on_trace = failed(&|g| *g == Group::Trace && !trace_is_values);
    let on_values = failed(&|g| *g == Group::Values || (trace_is_values && *g == Group::Trace));
    let on_shapes = failed(&|g| matches!(g, Group::Dim(_) | Group::Joint));
    let on_dtypes = failed(&|g| matches!(g, Group::Dtype { .. }));
    let raised = obs
        .samples
        .iter()
        .filter(|(_, f)| *f == Some(SampleFailure::Raised))
        .count();
    let any_failed = obs.samples.iter().any(|(_, f)| f.is_some());
    let stats = stats_line(&obs.samples);

    if obs.variant.def().records_one_run && on_trace == 0 {
        if on_values > 0 {
            let retrace = obs.retrace_values.filter(|(_, r)| r.traced);
            let control_flow = match retrace {
                Some((_, r)) => !r.same_ops,
                // No retrace: fall back on what the warnings and graphs say.
                None => {
                    warned(obs.warnings, Pitfall::ControlFlowErasure)
                        || scripted_has_more_control_flow(obs.evidence)
                        || !warned(obs.warnings, Pitfall::ValueSpecialization)
                }
            };
            let mut f = if control_flow {
                Finding::new(
                    Pitfall::ControlFlowErasure,
                    format!(
                        "tracing recorded one path of a data-dependent branch: with the trace \
                         shapes and new values the traced artifact {stats}"
                    ),
                )
            } else {
                Finding::new(
                    Pitfall::ValueSpecialization,
                    format!(
                        "a tensor value was frozen into the trace as a constant: with the trace \
                         shapes and new values the traced artifact {stats}"
                    ),
                )
            };
            if let Some((sample, r)) = retrace {
                f.evidence.push(retrace_evidence(sample, r));
            }
            findings.push(f);
        }
        // New shapes diverge while the trace shapes with new values matched: usually a frozen
        // shape, but a data-dependent branch whose new values happened to agree looks the same;
        // a re-trace recording other kinds of ops, with the tracer's "Python boolean" warning,
        // tells the branch apart (a shape branch gives no such warning, an unrolled loop the
        // same kinds of ops).
        let branch_seen_on_shapes = on_values == 0
            && obs
                .retrace_shapes
                .is_some_and(|(_, r)| r.traced && r.kinds_differ)
            && warned(obs.warnings, Pitfall::ControlFlowErasure);
        if branch_seen_on_shapes {
            let mut f = Finding::new(
                Pitfall::ControlFlowErasure,
                format!("tracing recorded one path of a data-dependent branch: the traced artifact {stats}"),
            );
            if let Some((sample, r)) = obs.retrace_shapes {
                f.evidence.push(retrace_evidence(sample, r));
            }
            findings.push(f);
        }
        if on_shapes > 0
            && !branch_seen_on_shapes
            && (on_values == 0 || shape_mismatch_on_new_shapes)
        {
            let mut f = Finding::new(
                Pitfall::ShapeSpecialization,
                format!(
                    "a shape was frozen into the trace: the traced artifact {stats}{}",
                    if on_values == 0 {
                        " (new values at the trace shapes match)"
                    } else {
                        ""
                    }
                ),
            );
            if let Some((sample, r)) = obs.retrace_shapes.filter(|(_, r)| r.traced) {
                f.evidence.push(retrace_evidence(sample, r));
            }
            findings.push(f);
        }
        if on_dtypes > 0 {
            findings.push(Finding::new(
                Pitfall::DtypeSpecialization,
                format!(
                    "a dtype was baked into the trace: on the trace input's values in another \
                     dtype the traced artifact {stats}"
                ),
            ));
        }
    }
    // torch.export makes a program for the example's dtypes: another dtype is its finding
    // whether the program raises or computes otherwise.
    let export = obs.variant.def().toolchain == Toolchain::Export;
    if export && on_trace == 0 && on_dtypes > 0 {
        findings.push(Finding::new(
            Pitfall::DtypeSpecialization,
            format!(
                "the exported program was made for the trace input's dtypes: on its values in \
                 another dtype it {stats}"
            ),
        ));
    }
    if raised > 0 {
        let mut f = Finding::new(
            Pitfall::RuntimeError,
            format!(
                "raises on {raised} of {} samples where eager does not",
                obs.samples.len()
            ),
        );
        if let Some((sample, message)) = obs.first_raise {
            f.evidence.push(format!("on {sample}: {message}"));
            if let Some(h) = runtime_hint(message) {
                f.hint = h.into();
            }
        }
        findings.push(f);
    }
    if let Some(d) = obs.device.filter(|d| d.flagged) {
        let mut f = Finding::new(
            Pitfall::DeviceSpecialization,
            format!(
                "eager follows its input to {}, the variant does not",
                d.device
            ),
        );
        f.evidence.push(d.detail.clone());
        findings.push(f);
    }
    let container = Some(SampleFailure::Mismatch(MismatchKind::Container));
    let containers = obs.samples.iter().filter(|(_, f)| *f == container).count();
    if containers > 0 {
        findings.push(Finding::new(
            Pitfall::ContainerMismatch,
            format!(
                "the variant returns another container than eager (a tuple for a list, or other \
                 dict keys) on {containers} samples: {stats}"
            ),
        ));
    }
    let explained = findings.iter().any(|f| {
        !matches!(
            f.pitfall,
            Pitfall::RuntimeError | Pitfall::DeviceSpecialization | Pitfall::ContainerMismatch
        )
    });
    let failing = obs.samples.iter().filter(|(_, f)| f.is_some()).count();
    let only_raised = raised > 0 && raised == failing;
    let others_failed = failing > containers;
    if any_failed && others_failed && !explained && !only_raised {
        let why = match (on_trace > 0, made_here) {
            (true, true) => " (including the trace input itself, so this is no specialization)",
            (true, false) => {
                " (every sample: the file computes something else than this eager model, such \
                 as other weights or an older version of its code; export it again)"
            }
            _ => "",
        };
        findings.push(Finding::new(
            Pitfall::OutputMismatch,
            format!("the variant {stats}{why}"),
        ));
    }
    attach_static_evidence(&mut findings, obs);
    findings
}

/// The line of a libtorch load error that says what is missing.
fn load_summary(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("Internal torch error"))
        .or_else(|| message.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("")
        .to_string()
}

/// A fix hint for well-known export failures; `None` keeps the generic one.
fn export_hint(message: &str) -> Option<&'static str> {
    if message.contains("No registered serialization name") {
        Some(
            "forward returns a type torch.export.save cannot write (a torch.return_types named \
             tuple, as torch.topk, torch.sort, torch.max(dim=) and torch.linalg.* return): \
             return a plain tuple of its tensors (tuple(result)), or register the type with \
             torch.utils._pytree.register_pytree_node(..., serialized_type_name=...)",
        )
    } else {
        None
    }
}

/// A fix hint for well-known libtorch runtime messages; `None` keeps the generic one.
fn runtime_hint(message: &str) -> Option<&'static str> {
    if message.contains("Unknown builtin op") {
        Some(
            "the artifact calls a custom op (such as torchvision::nms) that plain libtorch lacks: \
             link the op library into the deployment (libtorchvision for torchvision's ops) and \
             load it before the model",
        )
    } else if message.contains("Method 'forward' is not defined") {
        Some(
            "the scripted module has no plain `forward` (torch.nn.LSTM and GRU script theirs as \
             overloads): wrap it in a module whose forward has typed arguments, or trace it",
        )
    } else if message.contains("required keyword attribute") {
        Some(
            "the saved file cannot be loaded back (torch.jit.optimize_for_inference's rewrites \
             are not serializable in this torch): ship the frozen module and call \
             optimize_for_inference after loading it, where the deployment runs",
        )
    } else if message.contains("same device") || message.contains("expected device") {
        Some(Pitfall::DeviceSpecialization.hint())
    } else {
        None
    }
}

/// Which pitfalls a tracer warning can explain.
fn warning_explains(message: &str) -> &'static [Pitfall] {
    use Pitfall::*;
    let m = message.to_lowercase();
    if m.contains("python boolean") {
        &[ControlFlowErasure]
    } else if m.contains("len to get tensor shape")
        || m.contains("iterating over a tensor")
        || m.contains("registered as constants")
    {
        &[ShapeSpecialization]
    } else if m.contains("python integer")
        || m.contains("python index")
        || m.contains("python number")
        || m.contains("python float")
    {
        &[ValueSpecialization, ShapeSpecialization]
    } else if m.contains("python list") || m.contains("numpy") {
        &[ValueSpecialization]
    } else if m.contains("dtype") {
        &[DtypeSpecialization]
    } else {
        &[
            ControlFlowErasure,
            ValueSpecialization,
            ShapeSpecialization,
            OutputMismatch,
        ]
    }
}

fn warned(warnings: &[TraceWarning], p: Pitfall) -> bool {
    warnings
        .iter()
        .any(|w| warning_explains(&w.message).first() == Some(&p))
}

fn scripted_has_more_control_flow(e: &StaticEvidence) -> bool {
    match (e.traced_control_flow, e.scripted_control_flow) {
        (Some(t), Some(s)) => s.ifs > t.ifs || s.loops > t.loops,
        _ => false,
    }
}

fn retrace_evidence(sample: &str, r: &Retrace) -> String {
    if !r.same_ops {
        let diff = r
            .first_difference
            .as_ref()
            .map(|d| {
                format!(
                    ", first at op {}: {} then, {} now",
                    d.index,
                    d.before.as_deref().unwrap_or("nothing"),
                    d.after.as_deref().unwrap_or("nothing")
                )
            })
            .unwrap_or_default();
        format!(
            "tracing again on {sample} records a different graph ({} ops at trace time, {} \
             now{diff}): the trace took another path",
            r.ops_before, r.ops_after
        )
    } else if r.changed_constants.is_empty() {
        format!("tracing again on {sample} records the same graph")
    } else {
        let changes: Vec<String> = r
            .changed_constants
            .iter()
            .take(3)
            .map(|c| {
                let at = c
                    .r#where
                    .as_deref()
                    .map(|w| format!(" at {}", short_path(w)))
                    .unwrap_or_default();
                format!("{} {} became {}{at}", c.ty, c.before, c.after)
            })
            .collect();
        format!(
            "tracing again on {sample} records the same ops with other constants: {}",
            changes.join("; ")
        )
    }
}

/// Attach tracer warnings and graph constants to the findings they explain.
fn attach_static_evidence(findings: &mut [Finding], obs: &Observation<'_>) {
    attach_explaining_evidence(findings, obs);
    also_in_the_graph(findings, obs);
}

/// Each finding gets the warnings and graph constants that explain its pitfall.
fn attach_explaining_evidence(findings: &mut [Finding], obs: &Observation<'_>) {
    for f in findings.iter_mut() {
        if obs.variant.def().records_one_run {
            for w in obs.warnings {
                if warning_explains(&w.message).contains(&f.pitfall) {
                    let at = format!("{}:{}", short_path(&w.file), w.line);
                    f.location.get_or_insert_with(|| at.clone());
                    let times = if w.count > 1 {
                        format!(" ({}x)", w.count)
                    } else {
                        String::new()
                    };
                    f.evidence.push(format!(
                        "{} at {at}{times}: `{}`: {}",
                        w.category,
                        w.source_line,
                        first_line(&w.message)
                    ));
                }
            }
            for c in &obs.evidence.traced_only_constants {
                let explains = match (c.ty.as_str(), f.pitfall) {
                    ("Device", Pitfall::DeviceSpecialization) => true,
                    ("int", Pitfall::ShapeSpecialization) => c.note.is_some(),
                    ("float" | "Tensor", Pitfall::ValueSpecialization) => true,
                    _ => false,
                };
                if explains {
                    let at = c.r#where.as_deref().map(short_path).unwrap_or_default();
                    f.location.get_or_insert_with(|| at.clone());
                    let note = c
                        .note
                        .as_deref()
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    f.evidence.push(format!(
                        "the traced graph holds the constant {} {} from {at}{note}; the scripted \
                         graph does not",
                        c.ty, c.value
                    ));
                }
            }
            if f.pitfall == Pitfall::ControlFlowErasure
                && scripted_has_more_control_flow(obs.evidence)
            {
                let (t, s) = (
                    obs.evidence.traced_control_flow.unwrap_or_default(),
                    obs.evidence.scripted_control_flow.unwrap_or_default(),
                );
                f.evidence.push(format!(
                    "the scripted graph has {} prim::If and {} prim::Loop, the traced graph {} \
                     and {}",
                    s.ifs, s.loops, t.ifs, t.loops
                ));
            }
        }
    }
}

/// What the static evidence shows beyond the findings: tracer warnings and traced-only constants
/// at places no finding cites. One run shows one divergence at a time (fix the erased branch,
/// and the frozen `float(n)` fails next), so the first finding lists the others the evidence
/// points at, as places to look; dynamic evidence alone decides the pitfalls.
fn also_in_the_graph(findings: &mut [Finding], obs: &Observation<'_>) {
    if !obs.variant.def().records_one_run || findings.is_empty() {
        return;
    }
    let cited = |at: &str| {
        findings
            .iter()
            .any(|f| f.evidence.iter().any(|e| e.contains(at)))
    };
    let mut also = Vec::new();
    for w in obs.warnings {
        let at = format!("{}:{}", short_path(&w.file), w.line);
        if !cited(&at) {
            also.push(format!(
                "also: {} at {at}: `{}`: {}",
                w.category,
                w.source_line,
                first_line(&w.message)
            ));
        }
    }
    for c in &obs.evidence.traced_only_constants {
        let at = c.r#where.as_deref().map(short_path).unwrap_or_default();
        if !at.is_empty() && !cited(&at) {
            also.push(format!(
                "also: the traced graph holds the constant {} {} from {at}, which the scripted \
                 graph computes",
                c.ty, c.value
            ));
        }
    }
    also.dedup();
    findings[0].evidence.extend(also.into_iter().take(8));
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// A path relative to the current folder when it is inside it.
pub fn short_path(p: &str) -> String {
    let cwd = std::env::current_dir().ok();
    let path = std::path::Path::new(p);
    cwd.and_then(|c| path.strip_prefix(c).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.to_string())
}

/// The line that says what went wrong in a libtorch or TorchScript error: the last
/// `SomethingError: …` line of an interpreter traceback, else the first line.
pub fn error_summary(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Exception raised from") && !l.starts_with("frame #")
        })
        .collect();
    let error_line = lines.iter().rev().find(|l| {
        l.split_once(": ")
            .is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '))
    });
    let line = error_line
        .or(lines.first())
        .map(|l| l.to_string())
        .unwrap_or_default();
    // The worker prefixes the exception type, which TorchScript's message often repeats.
    match line.split_once(": ") {
        Some((head, rest)) if rest.starts_with(&format!("{head}: ")) => rest.to_string(),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::{ChangedConstant, ControlFlow, GraphConstant, OpDifference};
    use MismatchKind::*;
    use SampleFailure::*;

    fn retrace(same_ops: bool, constants: bool) -> Retrace {
        Retrace {
            traced: true,
            seconds: 0.0,
            same_ops,
            kinds_differ: !same_ops,
            ops_before: 1,
            ops_after: if same_ops { 1 } else { 2 },
            first_difference: (!same_ops).then(|| OpDifference {
                index: 1,
                before: None,
                after: Some("aten::neg".into()),
            }),
            changed_constants: if constants {
                vec![ChangedConstant {
                    ty: "int".into(),
                    before: "4".into(),
                    after: "1".into(),
                    r#where: Some("m.py:3".into()),
                }]
            } else {
                vec![]
            },
        }
    }

    /// Diagnose samples described as `group=failure` words and compare the pitfall ids.
    #[track_caller]
    fn check(
        variant: Variant,
        samples: &str,
        retrace_v: Option<Retrace>,
        retrace_s: Option<Retrace>,
        expect: &[Pitfall],
    ) {
        let samples: Vec<(Group, Option<SampleFailure>)> = samples
            .split_whitespace()
            .map(|w| {
                let (g, f) = w.rsplit_once('=').unwrap_or((w, "ok"));
                let group = Group::try_from(g.to_string()).unwrap();
                let f = match f {
                    "ok" => None,
                    "values" => Some(Mismatch(Values)),
                    "shape" => Some(Mismatch(Shape)),
                    "dtype" => Some(Mismatch(Dtype)),
                    "raised" => Some(Raised),
                    other => panic!("{other}"),
                };
                (group, f)
            })
            .collect();
        let evidence = StaticEvidence {
            traced_control_flow: Some(ControlFlow { ifs: 0, loops: 0 }),
            scripted_control_flow: Some(ControlFlow { ifs: 1, loops: 0 }),
            traced_only_constants: vec![GraphConstant {
                ty: "int".into(),
                value: "4".into(),
                r#where: Some("m.py:3".into()),
                note: Some("equals the trace-time value of dim B".into()),
            }],
        };
        let obs = Observation {
            variant,
            export_error: None,
            load_error: None,
            first_raise: None,
            samples,
            warnings: &[],
            evidence: &evidence,
            nondeterministic: None,
            device: None,
            retrace_values: retrace_v.as_ref().map(|r| ("s1", r)),
            retrace_shapes: retrace_s.as_ref().map(|r| ("s2", r)),
        };
        let got: Vec<Pitfall> = diagnose(&obs).iter().map(|f| f.pitfall).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn groups_decide_the_pitfall() {
        use Pitfall::*;
        #[allow(non_snake_case)]
        let (Traced, Scripted) = (
            Variant::named("traced").unwrap(),
            Variant::named("scripted").unwrap(),
        );
        check(Traced, "trace values dim:B joint", None, None, &[]);
        // A different graph on new values: another branch was recorded.
        check(
            Traced,
            "trace values=values dim:B=values",
            Some(retrace(false, false)),
            None,
            &[ControlFlowErasure],
        );
        // Same ops, other constants: a frozen value.
        check(
            Traced,
            "trace values=values joint=values",
            Some(retrace(true, true)),
            None,
            &[ValueSpecialization],
        );
        // Values pass, shapes fail: shape specialization, with or without a raise.
        check(
            Traced,
            "trace values dim:B=shape joint=shape",
            None,
            Some(retrace(true, true)),
            &[ShapeSpecialization],
        );
        check(
            Traced,
            "trace values dim:B=raised",
            None,
            None,
            &[ShapeSpecialization, RuntimeError],
        );
        // Both: the shape mismatch on new shapes is more than the value dependence explains.
        check(
            Traced,
            "trace values=values dim:B=shape",
            Some(retrace(true, true)),
            None,
            &[ValueSpecialization, ShapeSpecialization],
        );
        check(
            Traced,
            "trace dtype:x=float64=dtype",
            None,
            None,
            &[DtypeSpecialization],
        );
        // The trace input itself diverges: no specialization can explain it.
        check(
            Traced,
            "trace=values values=values",
            None,
            None,
            &[OutputMismatch],
        );
        // Scripting keeps control flow: a divergence is a semantics difference.
        check(
            Scripted,
            "trace values=values dim:B",
            None,
            None,
            &[OutputMismatch],
        );
        check(Scripted, "trace values=raised", None, None, &[RuntimeError]);
    }

    /// A failed torch.export is the pitfall its error kind says, with torch.export's fix hint
    /// (a save failure of a known kind its own), and an exported program's other dtype is a
    /// dtype finding where a script's is a plain mismatch.
    #[test]
    fn exported_findings_follow_torch_exports_errors() {
        static EVIDENCE: StaticEvidence = StaticEvidence {
            traced_only_constants: Vec::new(),
            traced_control_flow: None,
            scripted_control_flow: None,
        };
        let exported = Variant::named("exported").unwrap();
        fn obs(
            variant: Variant,
            error: Option<&ErrorBody>,
            samples: Vec<(Group, Option<SampleFailure>)>,
        ) -> Observation<'_> {
            Observation {
                variant,
                export_error: error,
                load_error: None,
                first_raise: None,
                samples,
                warnings: &[],
                evidence: &EVIDENCE,
                nondeterministic: None,
                device: None,
                retrace_values: None,
                retrace_shapes: None,
            }
        }
        let failed = |kind: ErrorKind, message: &str| {
            let err = ErrorBody::new(kind, message);
            diagnose(&obs(exported, Some(&err), Vec::new())).remove(0)
        };
        let f = failed(
            ErrorKind::ExportDataDependent,
            "forward could not guard on Eq(u0, 1)",
        );
        assert_eq!(f.pitfall, Pitfall::DataDependentControlFlow);
        assert!(f.hint.contains("torch.cond"), "{}", f.hint);
        let f = failed(
            ErrorKind::ExportConstraint,
            "B: the model's code specialized it",
        );
        assert_eq!(f.pitfall, Pitfall::ShapeSpecialization);
        assert_eq!(
            f.hint,
            Pitfall::ShapeSpecialization.hint_for(Toolchain::Export)
        );
        let f = failed(ErrorKind::ExportError, ".numpy() is not supported");
        assert_eq!(f.pitfall, Pitfall::ExportError);
        let f = failed(
            ErrorKind::ExportError,
            "the program exported, but torch.export.save cannot save it: No registered \
             serialization name for <class 'torch.return_types.topk'> found",
        );
        assert!(f.hint.contains("tuple(result)"), "{}", f.hint);
        let dtypes = || {
            let dtype = Group::Dtype {
                input: "x".into(),
                dtype: crate::case::DType::Float64,
            };
            vec![(Group::Trace, None), (dtype, Some(Mismatch(Values)))]
        };
        let f = diagnose(&obs(exported, None, dtypes()));
        assert_eq!(f[0].pitfall, Pitfall::DtypeSpecialization);
        assert!(f[0].hint.contains("torch.export"), "{}", f[0].hint);
        let scripted = diagnose(&obs(Variant::named("scripted").unwrap(), None, dtypes()));
        assert_eq!(scripted[0].pitfall, Pitfall::OutputMismatch);
    }

    /// An output mismatch of a frozen module points at its diff against the script, not at the
    /// traced and scripted `.code`; a scripted one keeps the generic hint.
    #[test]
    fn output_mismatch_hints_follow_the_variants_diff() {
        let evidence = StaticEvidence::default();
        let hint = |name: &str| {
            let f = diagnose(&Observation {
                variant: Variant::named(name).unwrap(),
                export_error: None,
                load_error: None,
                first_raise: None,
                samples: vec![
                    (Group::Trace, Some(Mismatch(Values))),
                    (Group::Values, Some(Mismatch(Values))),
                ],
                warnings: &[],
                evidence: &evidence,
                nondeterministic: None,
                device: None,
                retrace_values: None,
                retrace_shapes: None,
            });
            assert_eq!(f.len(), 1, "{name}: {f:?}");
            assert_eq!(f[0].pitfall, Pitfall::OutputMismatch);
            f[0].hint.clone()
        };
        assert_eq!(hint("scripted"), Pitfall::OutputMismatch.hint());
        let frozen = hint("frozen");
        assert!(
            frozen.starts_with("compare the scripted and frozen .code (the diff below)"),
            "{frozen}"
        );
        assert!(frozen.contains("torch.jit.freeze(..., optimize_numerics=False)"));
        assert!(hint("optimized").starts_with("compare the scripted and optimized .code"));
    }

    #[test]
    fn findings_carry_evidence_and_hints() {
        let evidence = StaticEvidence::default();
        let warnings = [TraceWarning {
            category: "TracerWarning".into(),
            message: "Using len to get tensor shape might cause the trace to be incorrect.".into(),
            file: "/nowhere/m.py".into(),
            line: 12,
            source_line: "return torch.arange(len(x))".into(),
            count: 2,
        }];
        let r = retrace(true, true);
        let obs = Observation {
            variant: Variant::named("traced").unwrap(),
            export_error: None,
            load_error: None,
            first_raise: None,
            samples: vec![
                (Group::Trace, None),
                (Group::Dim("B".into()), Some(Mismatch(Shape))),
            ],
            warnings: &warnings,
            evidence: &evidence,
            nondeterministic: None,
            device: None,
            retrace_values: None,
            retrace_shapes: Some(("s1", &r)),
        };
        let f = diagnose(&obs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].location.as_deref(), Some("/nowhere/m.py:12"));
        assert_eq!(f[0].hint, Pitfall::ShapeSpecialization.hint());
        assert_eq!(
            f[0].evidence,
            vec![
                "tracing again on s1 records the same ops with other constants: int 4 became 1 at m.py:3".to_string(),
                "TracerWarning at /nowhere/m.py:12 (2x): `return torch.arange(len(x))`: Using len to get tensor shape might cause the trace to be incorrect.".to_string(),
            ]
        );
        assert_eq!(f[0].summary, "a shape was frozen into the trace: the traced artifact diverges on dim:B 1/1; matches on trace (new values at the trace shapes match)");
    }

    #[test]
    fn nondeterminism_and_export_errors_stop_the_diagnosis() {
        let evidence = StaticEvidence::default();
        let base = Observation {
            variant: Variant::named("traced").unwrap(),
            export_error: None,
            load_error: None,
            first_raise: None,
            samples: vec![(Group::Trace, Some(Mismatch(Values)))],
            warnings: &[],
            evidence: &evidence,
            nondeterministic: Some("two eager runs on s0 differ".into()),
            device: None,
            retrace_values: None,
            retrace_shapes: None,
        };
        let f = diagnose(&base);
        assert_eq!(
            f.iter().map(|f| f.pitfall).collect::<Vec<_>>(),
            vec![Pitfall::NondeterministicEager]
        );
        let err = ErrorBody {
            kind: crate::error::ErrorKind::ScriptCompileError,
            message: "Python builtin <built-in function len> is currently not supported\n  File \"m.py\", line 3".into(),
            traceback: vec![],
            file: Some("m.py".into()),
            line: Some(3),
            source_line: Some("return len(x)".into()),
        };
        let f = diagnose(&Observation {
            variant: Variant::named("scripted").unwrap(),
            export_error: Some(&err),
            nondeterministic: None,
            ..base
        });
        assert_eq!(f[0].pitfall, Pitfall::ScriptCompileError);
        assert_eq!(f[0].location.as_deref(), Some("m.py:3"));
        assert_eq!(f[0].evidence[0], "at m.py:3: `return len(x)`");
    }

    #[test]
    fn device_findings_come_from_the_probe() {
        let evidence = StaticEvidence {
            traced_only_constants: vec![GraphConstant {
                ty: "Device".into(),
                value: "device(\"cpu\")".into(),
                r#where: Some("m.py:9".into()),
                note: None,
            }],
            ..StaticEvidence::default()
        };
        let probe = DeviceCheck { device: "meta".into(), flagged: true, detail: "eager returns a meta tensor; traced raised: Expected all tensors to be on the same device".into() };
        let obs = Observation {
            variant: Variant::named("traced").unwrap(),
            export_error: None,
            load_error: None,
            first_raise: None,
            samples: vec![(Group::Trace, None)],
            warnings: &[],
            evidence: &evidence,
            nondeterministic: None,
            device: Some(&probe),
            retrace_values: None,
            retrace_shapes: None,
        };
        let f = diagnose(&obs);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pitfall, Pitfall::DeviceSpecialization);
        assert_eq!(f[0].location.as_deref(), Some("m.py:9"));
        assert_eq!(f[0].evidence.len(), 2);
    }

    #[test]
    fn a_branch_whose_new_values_agreed_is_still_control_flow() {
        let evidence = StaticEvidence::default();
        let warnings = [TraceWarning {
            category: "TracerWarning".into(),
            message:
                "Converting a tensor to a Python boolean might cause the trace to be incorrect."
                    .into(),
            file: "m.py".into(),
            line: 3,
            source_line: "if x.sum() > 0:".into(),
            count: 1,
        }];
        let branch = retrace(false, false);
        let obs = |warnings: &'static [TraceWarning], r: &'static Retrace| Observation {
            variant: Variant::named("traced").unwrap(),
            export_error: None,
            load_error: None,
            first_raise: None,
            samples: vec![
                (Group::Trace, None),
                (Group::Values, None),
                (Group::Dim("B".into()), Some(Mismatch(Values))),
            ],
            warnings,
            evidence: Box::leak(Box::new(evidence.clone())),
            nondeterministic: None,
            device: None,
            retrace_values: None,
            retrace_shapes: Some(("s2", r)),
        };
        let leak = |r: Retrace| -> &'static Retrace { Box::leak(Box::new(r)) };
        let w: &'static [TraceWarning] = Box::leak(Box::new(warnings));
        let ids =
            |o: Observation<'static>| diagnose(&o).iter().map(|f| f.pitfall).collect::<Vec<_>>();
        assert_eq!(ids(obs(w, leak(branch))), vec![Pitfall::ControlFlowErasure]);
        // The same kinds of ops (an unrolled loop), or no boolean warning: a frozen shape.
        let mut unrolled = retrace(false, false);
        unrolled.kinds_differ = false;
        assert_eq!(
            ids(obs(w, leak(unrolled))),
            vec![Pitfall::ShapeSpecialization]
        );
        assert_eq!(
            ids(obs(&[], leak(retrace(false, false)))),
            vec![Pitfall::ShapeSpecialization]
        );
    }
}
