//! Sample I/O around libtorch: writing samples for the worker, reading a replayed input,
//! forward's arguments, loading an artifact, and running one sample through a variant.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Tensor};

use harness::case::{Case, InputKind, InputSpec, ScalarKind};
use harness::diagnose::error_summary;
use harness::error::ErrorKind;
use harness::protocol::{Export, WireValue};
use harness::worker::ErrorBody;

use super::context::SampleRun;
use crate::compare::{compare, Tolerances};
use crate::tensors;
use crate::value::Value;

/// One sample's inputs in a file of its own (names prefixed by its id, as in a batch).
pub fn write_sample(
    dir: &Path,
    id: &str,
    tensors: &[(String, Tensor)],
) -> Result<PathBuf, ErrorBody> {
    write_samples(&dir.join(format!("{id}.safetensors")), [(id, tensors)])
}

/// Samples' inputs in one file, each tensor named `<sample id>/<input name>`.
pub fn write_samples<'a>(
    path: &Path,
    samples: impl IntoIterator<Item = (&'a str, &'a [(String, Tensor)])>,
) -> Result<PathBuf, ErrorBody> {
    let named: Vec<(String, Tensor)> = samples
        .into_iter()
        .flat_map(|(id, tensors)| {
            tensors
                .iter()
                .map(move |(n, t)| (format!("{id}/{n}"), t.shallow_clone()))
        })
        .collect();
    tensors::write(path, &named).map_err(|e| ErrorBody::new(ErrorKind::Io, format!("{e:#}")))?;
    Ok(path.to_path_buf())
}

/// The inputs saved in a file, in the case's order (list inputs as `name.0`, `name.1`, ...;
/// a scalar as its 0-d tensor; nothing for a `none` input).
pub fn read_replay(file: &Path, case: &Case) -> Result<Vec<(String, Tensor)>, ErrorBody> {
    let mut tensors =
        tensors::read(file).map_err(|e| ErrorBody::new(ErrorKind::Replay, format!("{e:#}")))?;
    let mut out = Vec::new();
    for input in &case.spec.inputs {
        let n = &input.name;
        match input.kind() {
            InputKind::None => {}
            InputKind::List => {
                let mut i = 0;
                while let Some(t) = tensors.remove(&format!("{n}.{i}")) {
                    out.push((format!("{n}.{i}"), t));
                    i += 1;
                }
            }
            InputKind::Tensor | InputKind::Scalar(_) => {
                let t = tensors.remove(n).ok_or_else(|| {
                    ErrorBody::new(
                        ErrorKind::Replay,
                        format!("{} has no input `{n}`", file.display()),
                    )
                })?;
                out.push((n.clone(), t));
            }
        }
    }
    Ok(out)
}

/// What fills one argument of an artifact's forward.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// The case's input at this index.
    Input(usize),
    /// forward's default, for an argument the case leaves out before one it gives.
    Default(WireValue),
}

/// What an artifact's forward is called with, in its order: the case's inputs less those the
/// export bound (a trace binds scalar, `None` and keyword inputs, so its forward takes only the
/// tensors), by name when forward names them all (forward's defaults fill the arguments the
/// case leaves out before the last it gives), else by position when none is a keyword
/// (forward's parameters may be named otherwise than the case's inputs).
pub fn signature(case: &Case, export: &Export) -> Result<Vec<Slot>, String> {
    let inputs = &case.spec.inputs;
    let passed: Vec<usize> = (0..inputs.len())
        .filter(|&i| !export.bound.contains(&inputs[i].name))
        .collect();
    let args = export.args.as_deref().unwrap_or_default();
    let index = |a: &String| passed.iter().copied().find(|&i| &inputs[i].name == a);
    let all_named = passed.iter().all(|&i| args.contains(&inputs[i].name));
    if !all_named || export.args.is_none() {
        if passed.iter().any(|&i| inputs[i].keyword) {
            return Err(format!(
                "forward takes ({}): an input passed by keyword must be named as forward's \
                 parameter",
                args.join(", ")
            ));
        }
        return Ok(passed.into_iter().map(Slot::Input).collect());
    }
    let last = args
        .iter()
        .rposition(|a| index(a).is_some())
        .map_or(0, |l| l + 1);
    args[..last]
        .iter()
        .map(|a| match (index(a), export.defaults.get(a)) {
            (Some(i), _) => Ok(Slot::Input(i)),
            (None, Some(d)) if default_value(d).is_some() => Ok(Slot::Default(d.clone())),
            _ => Err(format!(
                "forward's argument `{a}` is not among the case's inputs and has no plain default"
            )),
        })
        .collect()
}

/// A default value as an IValue (`None`: not a plain value).
fn default_value(w: &WireValue) -> Option<IValue> {
    Some(match w {
        WireValue::None => IValue::None,
        WireValue::Bool { v } => IValue::Bool(*v),
        WireValue::Int { v } => IValue::Int(*v),
        WireValue::Float { v } => IValue::Double(v.parse().ok()?),
        WireValue::Str { v } => IValue::String(v.clone()),
        _ => return None,
    })
}

/// forward's arguments, as `slots` say: a tensor per tensor input, a `List[Tensor]` per list
/// input (tensors `name.0`, `name.1`, ...), an `Int`, `Double` or `Bool` per scalar (from its
/// 0-d tensor), `None`, or forward's default. Tensors are deep copies on `device` (the samples
/// are kept on the CPU): a model that writes into its input must not change the next run's.
pub fn arguments(
    case: &Case,
    slots: &[Slot],
    input: &[(String, Tensor)],
    device: Device,
) -> Vec<IValue> {
    slots
        .iter()
        .map(|slot| match slot {
            Slot::Input(i) => argument(&case.spec.inputs[*i], input, device),
            Slot::Default(w) => default_value(w).unwrap_or(IValue::None),
        })
        .collect()
}

/// One input's argument.
fn argument(spec: &InputSpec, input: &[(String, Tensor)], device: Device) -> IValue {
    let n = spec.name.as_str();
    let copy = |t: &Tensor| match device {
        Device::Cpu => t.copy(),
        _ => t.to_device(device),
    };
    let tensor = || {
        input
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.copy())
            .unwrap_or_else(|| Tensor::zeros([0], (tch::Kind::Float, Device::Cpu)))
    };
    match spec.kind() {
        InputKind::Tensor => IValue::Tensor(copy(&tensor())),
        InputKind::List => {
            let prefix = format!("{n}.");
            IValue::TensorList(
                input
                    .iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(&prefix)
                            .is_some_and(|i| i.parse::<usize>().is_ok())
                    })
                    .map(|(_, t)| copy(t))
                    .collect(),
            )
        }
        InputKind::Scalar(ScalarKind::Int) => IValue::Int(tensor().int64_value(&[])),
        InputKind::Scalar(ScalarKind::Float) => IValue::Double(tensor().double_value(&[])),
        InputKind::Scalar(ScalarKind::Bool) => IValue::Bool(tensor().int64_value(&[]) != 0),
        InputKind::None => IValue::None,
    }
}

/// An artifact loaded on `device`, in eval mode when the case runs eager in eval mode (`eval:
/// false` keeps the mode the artifact was saved in, as eager keeps the model's).
pub fn load_module(path: &Path, device: Device, eval: bool) -> Result<CModule, tch::TchError> {
    let mut m = CModule::load_on_device(path, device)?;
    if eval {
        m.set_eval();
    }
    Ok(m)
}

/// One sample through a variant loaded on `device`: `call` is the case and the inputs its
/// forward takes ([`signature`]).
pub fn run_sample(
    (module, device): (&CModule, Device),
    call: (&Case, &[Slot]),
    input: &[(String, Tensor)],
    expected: &Value,
    tol: &Tolerances,
) -> SampleRun {
    let _guard = tch::no_grad_guard();
    let args = arguments(call.0, call.1, input, device);
    match module.forward_is(&args) {
        Err(e) => SampleRun::Raised(error_summary(&e.to_string())),
        Ok(iv) => match Value::from_ivalue(iv) {
            Err(m) => SampleRun::Raised(m),
            Ok(actual) => {
                let c = compare(expected, &actual, tol);
                if c.is_match() {
                    SampleRun::Match(c)
                } else {
                    SampleRun::Mismatch(c)
                }
            }
        },
    }
}

/// A word for a shell command line, quoted when it needs to be.
pub fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_alphanumeric() || "/._-:=+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_takes_its_inputs_by_name_or_by_position() {
        let (_d, case) = harness::plan::example_case(""); // inputs x, i
        let export = |args: &[&str], bound: &[&str]| Export {
            ok: true,
            path: None,
            code: None,
            constants: Default::default(),
            modules: Vec::new(),
            error: None,
            warnings: Vec::new(),
            seconds: 0.0,
            device_pins: Vec::new(),
            args: Some(args.iter().map(|s| s.to_string()).collect()),
            defaults: [("h".to_string(), WireValue::None)].into(),
            bound: bound.iter().map(|s| s.to_string()).collect(),
        };
        let sig =
            |case: &Case, args: &[&str], bound: &[&str]| signature(case, &export(args, bound));
        use Slot::{Default as D, Input as I};
        assert_eq!(sig(&case, &["i", "x"], &[]), Ok(vec![I(1), I(0)]));
        assert_eq!(sig(&case, &["x", "i", "extra"], &[]), Ok(vec![I(0), I(1)]));
        assert_eq!(
            sig(&case, &["x", "h", "i"], &[]),
            Ok(vec![I(0), D(WireValue::None), I(1)])
        );
        assert_eq!(sig(&case, &["x"], &["i"]), Ok(vec![I(0)]));
        // Named otherwise than the case's inputs: by position.
        assert_eq!(sig(&case, &["input", "other"], &[]), Ok(vec![I(0), I(1)]));
        assert_eq!(sig(&case, &["x", "hidden"], &[]), Ok(vec![I(0), I(1)]));
        let e = sig(&case, &["x", "z", "i"], &[]).unwrap_err();
        assert_eq!(
            e,
            "forward's argument `z` is not among the case's inputs and has no plain default"
        );
        let mut kw = case.clone();
        kw.spec.inputs[1].keyword = true;
        let e = sig(&kw, &["input", "idx"], &[]).unwrap_err();
        assert!(e.starts_with("forward takes (input, idx): "), "{e}");
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("cases/a_b.yaml"), "cases/a_b.yaml");
        assert_eq!(shell_word("my cases/it's.yaml"), "'my cases/it'\\''s.yaml'");
    }
}
