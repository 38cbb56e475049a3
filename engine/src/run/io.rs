//! Sample I/O around libtorch: writing samples for the worker, reading a replayed input,
//! forward's arguments, loading an artifact, and running one sample through a variant.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Tensor};

use harness::diagnose::error_summary;
use harness::error::ErrorKind;
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

/// The inputs saved in a file, in forward's order (list inputs as `name.0`, `name.1`, ...).
pub fn read_replay(file: &Path, wire: &[String]) -> Result<Vec<(String, Tensor)>, ErrorBody> {
    let mut tensors =
        tensors::read(file).map_err(|e| ErrorBody::new(ErrorKind::Replay, format!("{e:#}")))?;
    let mut out = Vec::new();
    for n in wire {
        match n.strip_suffix("[]") {
            Some(base) => {
                let mut i = 0;
                while let Some(t) = tensors.remove(&format!("{base}.{i}")) {
                    out.push((format!("{base}.{i}"), t));
                    i += 1;
                }
            }
            None => {
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

/// forward's arguments: one tensor per plain input, a `List[Tensor]` per list input (`name[]`
/// in `wire`, tensors `name.0`, `name.1`, ...). Deep copies: a model that writes into its input
/// must not change the next run's input.
pub fn arguments(wire: &[String], input: &[(String, Tensor)]) -> Vec<IValue> {
    wire.iter()
        .map(|n| match n.strip_suffix("[]") {
            Some(base) => {
                let prefix = format!("{base}.");
                IValue::TensorList(
                    input
                        .iter()
                        .filter(|(k, _)| {
                            k.strip_prefix(&prefix)
                                .is_some_and(|i| i.parse::<usize>().is_ok())
                        })
                        .map(|(_, t)| t.copy())
                        .collect(),
                )
            }
            None => IValue::Tensor(
                input
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, t)| t.copy())
                    .unwrap_or_else(|| Tensor::zeros([0], (tch::Kind::Float, Device::Cpu))),
            ),
        })
        .collect()
}

pub fn load_module(path: &Path, device: Device) -> Result<CModule, tch::TchError> {
    let mut m = CModule::load_on_device(path, device)?;
    m.set_eval();
    Ok(m)
}

pub fn run_sample(
    module: &CModule,
    wire: &[String],
    input: &[(String, Tensor)],
    expected: &Value,
    tol: &Tolerances,
) -> SampleRun {
    let _guard = tch::no_grad_guard();
    let args = arguments(wire, input);
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
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("cases/a_b.yaml"), "cases/a_b.yaml");
        assert_eq!(shell_word("my cases/it's.yaml"), "'my cases/it'\\''s.yaml'");
    }
}
