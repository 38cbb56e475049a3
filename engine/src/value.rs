//! Output values: one tree type for what eager (from the worker) and the libtorch variants
//! (from `tch`) return, so both sides are compared by the same code.
//!
//! The worker describes an eager output as a JSON tree whose tensor leaves name entries of a
//! safetensors file; libtorch returns an `IValue`. Both become a [`Value`].

use std::collections::HashMap;
use std::fmt;

use harness::protocol::WireValue;
use tch::{IValue, Tensor};

#[derive(Debug)]
pub enum Value {
    Tensor(Tensor),
    /// A tensor of a dtype compared in another form (`transport` in [`Value::from_tensor`]):
    /// complex as real and imaginary parts, wide unsigned ints as int64, float8 as float32,
    /// quantized dequantized. Two of them match only with the same `dtype`.
    Exotic {
        tensor: Tensor,
        dtype: String,
    },
    /// A tensor known only by its shape, dtype and device (from a `meta` device run, or a
    /// device probe): compared on those alone.
    Desc {
        shape: Vec<i64>,
        dtype: String,
        device: String,
    },
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

impl Value {
    /// The kind of node, for structure mismatch messages.
    pub fn kind(&self) -> String {
        match self {
            Value::Tensor(t) => format!("Tensor{:?}", t.size()),
            Value::Exotic { tensor, dtype } => format!("Tensor{:?} {dtype}", tensor.size()),
            Value::Desc { shape, .. } => format!("Tensor{shape:?}"),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Bool(_) => "bool".into(),
            Value::Str(_) => "str".into(),
            Value::None => "None".into(),
            Value::Tuple(v) => format!("tuple of {}", v.len()),
            Value::List(v) => format!("list of {}", v.len()),
            Value::Dict(v) => format!("dict of {}", v.len()),
        }
    }

    /// Convert what a TorchScript module returned.
    pub fn from_ivalue(iv: IValue) -> Result<Value, String> {
        Ok(match iv {
            IValue::None => Value::None,
            IValue::Tensor(t) => Value::from_tensor(t)?,
            IValue::Double(f) => Value::Float(f),
            IValue::Int(i) => Value::Int(i),
            IValue::Bool(b) => Value::Bool(b),
            IValue::String(s) => Value::Str(s),
            IValue::Tuple(v) => Value::Tuple(
                v.into_iter()
                    .map(Value::from_ivalue)
                    .collect::<Result<_, _>>()?,
            ),
            IValue::GenericList(v) => Value::List(
                v.into_iter()
                    .map(Value::from_ivalue)
                    .collect::<Result<_, _>>()?,
            ),
            IValue::TensorList(v) => Value::List(
                v.into_iter()
                    .map(Value::from_tensor)
                    .collect::<Result<_, _>>()?,
            ),
            IValue::IntList(v) => Value::List(v.into_iter().map(Value::Int).collect()),
            IValue::DoubleList(v) => Value::List(v.into_iter().map(Value::Float).collect()),
            IValue::BoolList(v) => Value::List(v.into_iter().map(Value::Bool).collect()),
            IValue::StringList(v) => Value::List(v.into_iter().map(Value::Str).collect()),
            IValue::GenericDict(v) => Value::Dict(
                v.into_iter()
                    .map(|(k, v)| Ok((Value::from_ivalue(k)?, Value::from_ivalue(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            IValue::Object(_) => return Err("the module returned a TorchScript object".into()),
            IValue::Device(d) => Value::Str(format!("{d:?}")),
            #[allow(unreachable_patterns)]
            _ => return Err("the module returned a value the harness cannot compare".into()),
        })
    }

    /// A tensor from libtorch, in the form it is compared in: as itself, or, for the dtypes the
    /// harness carries in another form (as the worker does for eager's: see `eager.py`,
    /// `transportable`), that form with the dtype's name.
    pub fn from_tensor(t: Tensor) -> Result<Value, String> {
        use tch::Kind::*;
        let exotic = |tensor: Tensor, dtype: &str| Value::Exotic {
            tensor,
            dtype: dtype.to_string(),
        };
        if t.is_sparse() {
            let dense = t
                .f_to_dense(None, false)
                .map_err(|e| format!("a sparse output cannot be made dense: {e}"))?;
            return Ok(match Value::from_tensor(dense)? {
                Value::Tensor(d) => {
                    let name = format!("sparse_coo:{}", kind_name(d.kind()));
                    exotic(d, &name)
                }
                Value::Exotic { tensor, dtype } => exotic(tensor, &format!("sparse_coo:{dtype}")),
                other => other,
            });
        }
        Ok(match t.f_kind() {
            Ok(ComplexHalf | ComplexFloat | ComplexDouble) => {
                let name = kind_name(t.kind());
                exotic(t.resolve_conj().view_as_real(), name)
            }
            Ok(k @ (Float8e5m2 | Float8e4m3fn | Float8e5m2fnuz | Float8e4m3fnuz)) => {
                exotic(t.to_kind(Float), kind_name(k))
            }
            Ok(k @ (QInt8 | QUInt8 | QInt32)) => exotic(t.dequantize(), kind_name(k)),
            Ok(_) => Value::Tensor(t),
            // c10::ScalarType 27, 28, 29: the unsigned ints tch has no kind for.
            Err(tch::TchError::UnknownKind(n @ 27..=29)) => {
                let name = ["uint16", "uint32", "uint64"][(n - 27) as usize];
                let wide = t
                    .f_to_kind(Int64)
                    .map_err(|e| format!("a {name} output cannot be read: {e}"))?;
                exotic(wide, name)
            }
            Err(e) => {
                return Err(format!(
                    "an output tensor of a dtype the harness cannot compare ({e})"
                ))
            }
        })
    }

    /// A second handle on the same tree (tensors are shared, not copied).
    pub fn dup(&self) -> Value {
        self.map_tensors(&|t| Value::Tensor(t.shallow_clone()))
    }

    /// The same tree with every tensor replaced by its shape, dtype and device.
    pub fn describe(&self) -> Value {
        self.map_tensors(&|t| Value::Desc {
            shape: t.size(),
            dtype: kind_name(t.kind()).to_string(),
            device: device_name(t.device()),
        })
    }

    /// The same tree with `f` applied to every tensor leaf (everything else copied).
    fn map_tensors(&self, f: &dyn Fn(&Tensor) -> Value) -> Value {
        match self {
            Value::Tensor(t) => f(t),
            Value::Exotic { tensor, dtype } => match f(tensor) {
                Value::Tensor(t) => Value::Exotic {
                    tensor: t,
                    dtype: dtype.clone(),
                },
                Value::Desc {
                    mut shape, device, ..
                } => {
                    if dtype.starts_with("complex") {
                        shape.pop(); // the real and imaginary parts
                    }
                    Value::Desc {
                        shape,
                        dtype: dtype.clone(),
                        device,
                    }
                }
                other => other,
            },
            Value::Desc {
                shape,
                dtype,
                device,
            } => Value::Desc {
                shape: shape.clone(),
                dtype: dtype.clone(),
                device: device.clone(),
            },
            Value::Int(i) => Value::Int(*i),
            Value::Float(x) => Value::Float(*x),
            Value::Bool(b) => Value::Bool(*b),
            Value::Str(s) => Value::Str(s.clone()),
            Value::None => Value::None,
            Value::Tuple(v) => Value::Tuple(v.iter().map(|x| x.map_tensors(f)).collect()),
            Value::List(v) => Value::List(v.iter().map(|x| x.map_tensors(f)).collect()),
            Value::Dict(v) => Value::Dict(
                v.iter()
                    .map(|(k, x)| (k.map_tensors(f), x.map_tensors(f)))
                    .collect(),
            ),
        }
    }

    /// Build from the worker's JSON description and the tensors it saved.
    pub fn from_wire(
        node: &WireValue,
        tensors: &mut HashMap<String, Tensor>,
    ) -> Result<Value, String> {
        Ok(match node {
            WireValue::Tensor { key, dtype, device } => {
                let mut tensor = tensors
                    .remove(key)
                    .ok_or_else(|| format!("eager output lacks tensor `{key}`"))?;
                if let Some(device) = device {
                    // Back where eager left it: a variant's output elsewhere is a finding.
                    tensor = tensor
                        .f_to_device(parse_device(device)?)
                        .map_err(|e| format!("eager output `{key}` on {device}: {e}"))?;
                }
                match dtype {
                    Some(dtype) => Value::Exotic {
                        tensor,
                        dtype: dtype.clone(),
                    },
                    None => Value::Tensor(tensor),
                }
            }
            WireValue::TensorDesc {
                shape,
                dtype,
                device,
            } => Value::Desc {
                shape: shape.clone(),
                dtype: dtype.clone(),
                device: device.clone(),
            },
            WireValue::Int { v } => Value::Int(*v),
            WireValue::Float { v } => Value::Float(
                v.parse()
                    .map_err(|_| format!("bad float `{v}` in eager output"))?,
            ),
            WireValue::Bool { v } => Value::Bool(*v),
            WireValue::Str { v } => Value::Str(v.clone()),
            WireValue::None => Value::None,
            WireValue::Tuple { items } => Value::Tuple(
                items
                    .iter()
                    .map(|i| Value::from_wire(i, tensors))
                    .collect::<Result<_, _>>()?,
            ),
            WireValue::List { items } => Value::List(
                items
                    .iter()
                    .map(|i| Value::from_wire(i, tensors))
                    .collect::<Result<_, _>>()?,
            ),
            WireValue::Dict { items } => Value::Dict(
                items
                    .iter()
                    .map(|(k, v)| {
                        Ok((Value::from_wire(k, tensors)?, Value::from_wire(v, tensors)?))
                    })
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// A dict key or scalar, as shown in output paths (`output["boxes"]`, `output[0]`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::None => f.write_str("None"),
            other => f.write_str(&other.kind()),
        }
    }
}

/// torch's name for a dtype (`float32`), as the worker reports it.
pub fn kind_name(kind: tch::Kind) -> &'static str {
    use tch::Kind::*;
    match kind {
        Uint8 => "uint8",
        Int8 => "int8",
        Int16 => "int16",
        Int => "int32",
        Int64 => "int64",
        Half => "float16",
        Float => "float32",
        Double => "float64",
        ComplexHalf => "complex32",
        ComplexFloat => "complex64",
        ComplexDouble => "complex128",
        Bool => "bool",
        BFloat16 => "bfloat16",
        QInt8 => "qint8",
        QUInt8 => "quint8",
        QInt32 => "qint32",
        Float8e5m2 => "float8_e5m2",
        Float8e4m3fn => "float8_e4m3fn",
        Float8e5m2fnuz => "float8_e5m2fnuz",
        Float8e4m3fnuz => "float8_e4m3fnuz",
    }
}

/// A device as torch names it (`cpu`, `cuda`, `cuda:1`).
pub fn parse_device(name: &str) -> Result<tch::Device, String> {
    match name.split_once(':') {
        None if name == "cpu" => Ok(tch::Device::Cpu),
        None if name == "cuda" => Ok(tch::Device::Cuda(0)),
        Some(("cuda", i)) => i
            .parse()
            .map(tch::Device::Cuda)
            .map_err(|_| format!("bad device `{name}`")),
        _ => Err(format!(
            "a device the harness cannot hold tensors on: `{name}`"
        )),
    }
}

/// torch's name for a device (`cpu`, `cuda:0`).
pub fn device_name(device: tch::Device) -> String {
    match device {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        tch::Device::Mps => "mps".into(),
        tch::Device::Vulkan => "vulkan".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_trees_become_values() {
        let json = r#"{"t":"tuple","items":[{"t":"tensor","key":"o.0"},{"t":"float","v":"nan"},
            {"t":"dict","items":[[{"t":"str","v":"a"},{"t":"list","items":[{"t":"int","v":3},{"t":"none"}]}]]}]}"#;
        let wire: WireValue = serde_json::from_str(json).unwrap();
        let mut tensors = HashMap::from([("o.0".to_string(), Tensor::from_slice(&[1.0f32, 2.0]))]);
        let v = Value::from_wire(&wire, &mut tensors).unwrap();
        let Value::Tuple(items) = &v else {
            panic!("{v:?}")
        };
        assert!(matches!(&items[0], Value::Tensor(t) if t.size() == [2]));
        assert!(matches!(items[1], Value::Float(f) if f.is_nan()));
        assert_eq!(items[2].kind(), "dict of 1");
        let missing = Value::from_wire(&wire, &mut HashMap::new()).unwrap_err();
        assert_eq!(missing, "eager output lacks tensor `o.0`");
    }

    #[test]
    fn ivalues_become_values() {
        let iv = IValue::Tuple(vec![
            IValue::IntList(vec![1, 2]),
            IValue::GenericDict(vec![(IValue::String("k".into()), IValue::Double(0.5))]),
        ]);
        let v = Value::from_ivalue(iv).unwrap();
        assert_eq!(v.kind(), "tuple of 2");
    }
}
