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
            IValue::Tensor(t) => Value::Tensor(t),
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
            IValue::TensorList(v) => Value::List(v.into_iter().map(Value::Tensor).collect()),
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
            WireValue::Tensor { key } => Value::Tensor(
                tensors
                    .remove(key)
                    .ok_or_else(|| format!("eager output lacks tensor `{key}`"))?,
            ),
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
        _ => "other",
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
