//! The device probe: does each variant follow its inputs to another device as eager does?
//!
//! The second device is the one the case does not run on, when this machine has it: a case run
//! on the CPU is probed on CUDA (artifacts made on the CPU, run on CUDA inputs), a case run on
//! CUDA is probed on the CPU (artifacts made on CUDA, run on CPU inputs). There eager (and each
//! variant that runs in the worker) runs in the case's child and the libtorch variants run here.
//! Without CUDA, on the meta device (which tch does not expose), eager and the saved artifacts
//! run in a child of the probe server, and only when a graph names a device (or the case asks:
//! `check.device_probe: always`). A probe that fails costs only the device judgement, with a
//! note.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use tch::Device;

use harness::case::{DeviceProbe, Variant};
use harness::diagnose::{error_summary, DeviceCheck};
use harness::error::ErrorKind;
use harness::probe;
use harness::variant::Runtime;
use harness::worker::{ErrorBody, ProbeRun};

use super::context::{CaseRun, Clock, ProbeWait, SampleRun};
use super::io::{arguments, load_module};
use super::Runner;
use crate::compare::{compare, MismatchKind, Tolerance, Tolerances};
use crate::value::{parse_device, Value};

impl Runner {
    /// Fork the probe server from this job's fork server (idle between cases) when the probe
    /// service wants one and no other job is forking it.
    pub(super) fn fork_probe_server_if_wanted(&mut self, clock: &mut Clock) {
        if self.probe.claim_start() {
            let server = self.call(clock, |w, timeout| w.probe_server(timeout));
            self.probe
                .started(server.map_err(|e| error_summary(&e.message)));
        }
    }

    /// Start the device probe on the trace input (it runs while libtorch runs the variants).
    pub(super) fn start_device_probe(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        if cx.is_replay() {
            return Ok(());
        }
        let names = cx.case.wire_names();
        let file = cx.samples().files[0].clone();
        let other = match cx.on() {
            // Whether there is a GPU was asked once for the run (`verify::on_this_machine`).
            Device::Cpu if self.opts.device.cuda == Some(true) => Some(Device::Cuda(0)),
            Device::Cpu => None,
            _ => Some(Device::Cpu),
        };
        if let Some(other) = other {
            // The variants that run in the worker run there on that device too; the others
            // run here.
            let in_worker = artifacts(cx, |v| {
                v.def().runtime == Runtime::Worker && v.def().portable
            });
            let id = self.call(&mut cx.clock, |w, _| {
                w.device_probe(&cx.case.name, &file, &names, probe_name(other), &in_worker)
            })?;
            cx.probe = ProbeWait::Device(id, other);
            return Ok(());
        }
        let exported = cx.exported.as_ref().expect("exported");
        let exports: Vec<(Variant, &harness::worker::Export)> = exported
            .exports
            .iter()
            .filter(|(_, e)| e.ok)
            .map(|(v, e)| (*v, e))
            .collect();
        let pinned = exports.iter().any(|(_, e)| !e.device_pins.is_empty());
        if cx.case.spec.check.device_probe == DeviceProbe::Auto && !pinned {
            cx.probe = ProbeWait::Judged(exports.iter().map(|(v, _)| (*v, not_run(*v))).collect());
            return Ok(());
        }
        let job = probe::Job {
            load: cx.load.clone().expect("loaded before the probe"),
            case: cx.case.name.clone(),
            input: file,
            names,
            artifacts: artifacts(cx, |v| v.def().portable),
            budget: cx.clock.left(),
        };
        cx.probe = ProbeWait::Meta(self.probe.submit(job), None);
        Ok(())
    }

    /// 6. On the second device (CUDA or the CPU), eager's run there (in the case's child),
    ///    judged against the variants run there here.
    pub(super) fn collect_device_probe(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        let ProbeWait::Device(id, device) = cx.probe else {
            return Ok(());
        };
        let runs = self.call(&mut cx.clock, |w, timeout| {
            w.device_probe_result(id, timeout)
        })?;
        cx.probe = ProbeWait::Judged(judge(cx, probe_name(device), runs));
        Ok(())
    }

    /// 8. The device probe's outcome, waited for if need be, judged.
    pub(super) fn judge_device(&mut self, cx: &mut CaseRun) -> Result<(), ErrorBody> {
        if !matches!(cx.probe, ProbeWait::Meta(..)) {
            return Ok(());
        }
        let ProbeWait::Meta(rx, got) =
            std::mem::replace(&mut cx.probe, ProbeWait::Judged(BTreeMap::new()))
        else {
            unreachable!("checked above")
        };
        let checks = match got.unwrap_or_else(|| self.wait_probe(&mut cx.clock, &rx)) {
            Ok(runs) => judge(cx, "meta", runs),
            Err(probe::Failure::Interrupted) => {
                return Err(ErrorBody::new(ErrorKind::Interrupted, "interrupted"))
            }
            Err(probe::Failure::Failed(why)) => {
                cx.result.notes.push(format!(
                    "device probe on meta failed: {why}; device portability is not judged"
                ));
                unjudged_pins(cx, &format!("the probe on meta failed ({why})"));
                BTreeMap::new()
            }
        };
        cx.probe = ProbeWait::Judged(checks);
        Ok(())
    }

    /// Wait for a probe's outcome, within the case's time limit. While waiting, this job's fork
    /// server is idle: if the probe server is gone, fork another from it.
    fn wait_probe(&mut self, clock: &mut Clock, rx: &Receiver<probe::Outcome>) -> probe::Outcome {
        loop {
            if harness::interrupt::requested() {
                return Err(probe::Failure::Interrupted);
            }
            let left = clock.left();
            if left.is_zero() {
                return Err(probe::Failure::Failed(
                    "it did not answer within the case's time limit".into(),
                ));
            }
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(outcome) => return outcome,
                Err(RecvTimeoutError::Timeout) => self.fork_probe_server_if_wanted(clock),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(probe::Failure::Failed("the probe service stopped".into()))
                }
            }
        }
    }
}

/// Did the variant raise on meta only for a CPU tensor it holds: its graph names no device, it
/// holds tensor constants (a frozen module's weights), and it raised on a tensor on the CPU? On meta those constants stay on the CPU (see the worker's `load_on`), where a
/// deployment's `torch.jit.load(map_location=device)` moves them.
fn held_on_cpu(cx: &CaseRun, variant: Variant, check: &DeviceCheck) -> bool {
    let constants = cx
        .exported
        .as_ref()
        .and_then(|e| e.exports.get(&variant))
        .is_some_and(|e| !e.constants.is_empty());
    // "Tensor on device cpu is not on the expected device meta", "found input tensor at meta
    // and parameter tensor at cpu" (a frozen RNN's weights).
    let raised = check.detail.split_once(" raised: ").map(|(_, m)| m);
    constants && raised.is_some_and(|m| m.contains("device cpu") || m.contains("tensor at cpu"))
}

/// Such a variant's check: not judged (said as a warning), since the probe cannot tell its
/// constants from a device the model pins.
fn constants_only(variant: Variant, check: DeviceCheck) -> DeviceCheck {
    DeviceCheck {
        flagged: false,
        detail: format!(
            "device portability not judged: {variant}'s graph names no device, but it holds \
             tensor constants, which stay on the CPU in the meta probe (a deployment's \
             torch.jit.load(map_location=device) moves them), and it raised there: {}",
            check.detail
        ),
        ..check
    }
}

/// What in a variant's graph names a device, said in one line.
fn exported_pins(cx: &CaseRun, variant: Variant) -> String {
    cx.exported
        .as_ref()
        .and_then(|e| e.exports.get(&variant))
        .map(|e| e.device_pins.join("; "))
        .unwrap_or_default()
}

/// The saved artifact of each variant that exported and `wanted` selects, by name.
fn artifacts(cx: &CaseRun, wanted: impl Fn(Variant) -> bool) -> Vec<(String, PathBuf)> {
    let exported = cx.exported.as_ref().expect("exported");
    exported
        .exports
        .iter()
        .filter(|(v, e)| e.ok && wanted(**v))
        .filter_map(|(v, e)| Some((v.as_str().to_string(), e.path.clone()?)))
        .collect()
}

/// A variant whose graph names a device that no probe could judge gets a visible warning, with
/// the pins: a device baked in by tracing must never pass in silence.
fn unjudged_pins(cx: &mut CaseRun, why: &str) {
    let Some(exported) = cx.exported.as_ref() else {
        return;
    };
    for (variant, export) in &exported.exports {
        if export.device_pins.is_empty() {
            continue;
        }
        let warning = format!(
            "device portability not judged: {why}, and the {variant} graph names a device: {}; \
             on a GPU this artifact may keep work on the CPU or fail (check it where CUDA is)",
            export.device_pins.join("; ")
        );
        cx.variants
            .entry(*variant)
            .or_default()
            .not_judged
            .push(warning);
    }
}

/// The check of a variant whose graphs name no device, so the meta probe did not run.
fn not_run(v: Variant) -> DeviceCheck {
    DeviceCheck {
        device: "meta".into(),
        flagged: false,
        detail: format!(
            "not run on meta: no graph names a device (no Device constant, no aten::cpu, cuda or \
             device), so every tensor {v} makes follows its inputs as eager's do \
             (check.device_probe: always runs it anyway)"
        ),
    }
}

/// Judge each loaded variant on the second device from the runs the probe made there (on CUDA,
/// eager's only; the variants run here).
fn judge(
    cx: &mut CaseRun,
    device: &str,
    (mut probe, seconds): probe::Runs,
) -> BTreeMap<Variant, DeviceCheck> {
    cx.clock.torch_ms += seconds * 1e3;
    let eager = probe.remove("eager");
    let eager_value = eager
        .as_ref()
        .filter(|e| e.ok)
        .and_then(|e| Value::from_wire(e.output.as_ref()?, &mut Default::default()).ok());
    let Some(eager_value) = eager_value else {
        let why = eager
            .and_then(|e| e.error)
            .map(|e| error_summary(&e.message))
            .unwrap_or_default();
        cx.result.notes.push(format!(
            "device probe on {device} skipped: eager itself does not run there ({why}), so no \
             variant can be judged for device portability"
        ));
        unjudged_pins(cx, &format!("eager cannot run on {device} ({why})"));
        return BTreeMap::new();
    };
    let mut checks = BTreeMap::new();
    let mut not_judged = Vec::new();
    for (&variant, run) in cx.variants.iter().filter(|(_, r)| r.runnable.is_some()) {
        if !variant.def().portable {
            continue; // compiled for one device: said by its verdict
        }
        // On a real device the libtorch variants run here; on meta (no tch device) in the probe.
        let there = match parse_device(device) {
            Ok(on) if variant.def().runtime == Runtime::Libtorch => run_on(cx, variant, on),
            _ => from_probe(probe.remove(variant.as_str())),
        };
        let cpu_ok = matches!(run.runs.first(), Some(SampleRun::Match(_)));
        let pins = exported_pins(cx, variant);
        let mut check = device_verdict(device, variant, &eager_value, there, cpu_ok);
        if device == "meta" && pins.is_empty() && check.flagged && held_on_cpu(cx, variant, &check)
        {
            check = constants_only(variant, check);
            not_judged.push((variant, check.detail.clone()));
        }
        if check.flagged && !pins.is_empty() {
            check.detail = format!("{}; its graph fixes a device: {}", check.detail, pins);
        }
        checks.insert(variant, check);
    }
    for (variant, warning) in not_judged {
        let run = cx.variants.get_mut(&variant).expect("judged above");
        run.not_judged.push(warning);
    }
    checks
}

/// How the worker and the results name a real probe device.
fn probe_name(device: Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

/// The variant's artifact loaded on the probe's device `on` and run on the trace input moved
/// there.
fn run_on(cx: &CaseRun, variant: Variant, on: Device) -> Result<Value, String> {
    let order = cx
        .variants
        .get(&variant)
        .map(|r| r.args.clone())
        .unwrap_or_default();
    let args = arguments(&cx.case, &order, &cx.samples().inputs[0], on);
    let _guard = tch::no_grad_guard();
    let path = cx
        .exported
        .as_ref()
        .and_then(|e| e.exports.get(&variant)?.path.clone());
    let module = path
        .ok_or_else(|| "no artifact".to_string())
        .and_then(|p| load_module(&p, on, cx.case.spec.model.eval).map_err(|e| e.to_string()))?;
    let out = module
        .forward_is(&args)
        .map_err(|e| error_summary(&e.to_string()))?;
    Value::from_ivalue(out).map(|v| v.describe())
}

/// A variant's run in the probe server, as a value or the error it raised.
fn from_probe(run: Option<ProbeRun>) -> Result<Value, String> {
    match run {
        Some(ProbeRun {
            ok: true,
            output: Some(o),
            ..
        }) => Value::from_wire(&o, &mut Default::default()),
        Some(r) => Err(r
            .error
            .map(|e| error_summary(&e.message))
            .unwrap_or_default()),
        None => Err("no probe result".into()),
    }
}

/// Judge one variant's run on the probe device against eager's. `cpu_ok`: the variant matched
/// eager on the trace input on the CPU. Only what the device changes is flagged: a result on
/// another device always; a raise, or another shape, dtype or structure, only when the CPU run
/// was right (otherwise that divergence is the CPU's finding, not the device's).
fn device_verdict(
    device: &str,
    variant: Variant,
    eager: &Value,
    run: Result<Value, String>,
    cpu_ok: bool,
) -> DeviceCheck {
    let eager_kind = describe_leaf(eager);
    let (flagged, detail) = match run {
        // The meta device has no data and not every kernel: such a failure says nothing about
        // the variant's device handling.
        Err(e) if device == "meta" && meta_cannot_run(&e) => (
            false,
            format!("inconclusive: {variant} cannot run on meta at all ({e})"),
        ),
        Err(e) => (
            cpu_ok,
            format!("on {device} eager returns {eager_kind}; {variant} raised: {e}"),
        ),
        Ok(v) => {
            let exact: Tolerances = Tolerance {
                rtol: 0.0,
                atol: 0.0,
            }
            .into();
            match compare(eager, &v, &exact).mismatches.first() {
                Some(m) => (
                    m.kind == MismatchKind::Device || cpu_ok,
                    format!("on {device}, {variant} at {}: {}", m.path, m.detail),
                ),
                None => (
                    false,
                    format!("on {device}, {variant} returns {eager_kind} like eager"),
                ),
            }
        }
    };
    DeviceCheck {
        device: device.into(),
        flagged,
        detail,
    }
}

/// Errors that come from the meta device's limits (no data, missing kernels), not from the
/// model's device handling.
fn meta_cannot_run(message: &str) -> bool {
    let m = message.to_lowercase();
    ["meta tensors", "meta kernel", "'meta' backend", "fake impl"]
        .iter()
        .any(|p| m.contains(p))
}

/// `a float32 tensor of shape [3, 5] on meta` for a described output's first tensor.
fn describe_leaf(v: &Value) -> String {
    match v {
        Value::Desc {
            shape,
            dtype,
            device,
        } => format!("a {dtype} tensor of shape {shape:?} on {device}"),
        Value::Tuple(items) | Value::List(items) => items
            .first()
            .map(describe_leaf)
            .map(|d| format!("({d}, ...)"))
            .unwrap_or_else(|| v.kind()),
        other => other.kind(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_limits_are_not_device_findings() {
        assert!(meta_cannot_run(
            "RuntimeError: Tensor.item() cannot be called on meta tensors"
        ));
        assert!(meta_cannot_run(
            "NotImplementedError: aten::equal: attempted to run this operator with Meta tensors"
        ));
        assert!(!meta_cannot_run(
            "RuntimeError: Tensor on device cpu is not on the expected device meta!"
        ));
    }
}
