//! Case files: the version-1 YAML format, its parsing and its validation.
//!
//! A case pairs one model with input generators and symbolic dims (see the README for the
//! format). Parsing is strict: unknown fields, wrong types and undeclared dims are errors, and
//! every error is one line that names the file and the line and column (from the YAML parser) or
//! the field path (for checks made after parsing). Nothing here touches Python or libtorch.
//!
//! Loading also decides which variants a case runs ([`VariantChoice`]: the run's `--variants`,
//! else the case's own list, else the project's, else the defaults; `shipped` whenever the case
//! names an `artifact:`); everything downstream iterates over [`Case::variants`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pitfall::Pitfall;
pub use crate::variant::Variant;

/// Element types an input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    Float32,
    Float64,
    Float16,
    Bfloat16,
    Uint8,
    Int8,
    Int16,
    Int32,
    Int64,
    Bool,
}

impl DType {
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::Float32 | DType::Float64 | DType::Float16 | DType::Bfloat16
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Float16 => "float16",
            DType::Bfloat16 => "bfloat16",
            DType::Uint8 => "uint8",
            DType::Int8 => "int8",
            DType::Int16 => "int16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
            DType::Bool => "bool",
        }
    }

    /// The value generator used when an input names none.
    pub fn default_values(self) -> ValueGen {
        match self {
            DType::Bool => ValueGen::Bool(0.5),
            DType::Uint8 => ValueGen::Int([Bound::fixed(0), Bound::fixed(255)]),
            d if d.is_float() => ValueGen::Uniform([-1.0, 1.0]),
            _ => ValueGen::Int([Bound::fixed(-10), Bound::fixed(10)]),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the values of an input are drawn: a one-key mapping such as `{uniform: [-1, 1]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ValueGenRepr", into = "ValueGenRepr")]
pub enum ValueGen {
    /// Uniform in `[lo, hi)`.
    Uniform([f64; 2]),
    /// Normal with `[mean, std]`.
    Normal([f64; 2]),
    /// Integers in `[lo, hi]`; a bound may name a dim (`[1, T]`, `[0, T - 1]`), resolved per
    /// sample with that sample's dims.
    Int([Bound; 2]),
    /// `true` with probability `p`.
    Bool(f64),
}

/// The written form of [`ValueGen`] (serde_yaml reads enums as `!tags`, not one-key maps).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueGenRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uniform: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    normal: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    int: Option<[Bound; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bool: Option<f64>,
}

impl TryFrom<ValueGenRepr> for ValueGen {
    type Error = String;
    fn try_from(r: ValueGenRepr) -> Result<ValueGen, String> {
        let mut found: Vec<ValueGen> = Vec::new();
        found.extend(r.uniform.map(ValueGen::Uniform));
        found.extend(r.normal.map(ValueGen::Normal));
        found.extend(r.int.map(ValueGen::Int));
        found.extend(r.bool.map(ValueGen::Bool));
        match found.len() {
            1 => Ok(found.remove(0)),
            _ => Err(
                "`values` expects exactly one of `uniform: [lo, hi]`, `normal: [mean, std]`, \
                      `int: [lo, hi]`, `bool: p`"
                    .into(),
            ),
        }
    }
}

impl From<ValueGen> for ValueGenRepr {
    fn from(v: ValueGen) -> ValueGenRepr {
        let mut r = ValueGenRepr::default();
        match v {
            ValueGen::Uniform(x) => r.uniform = Some(x),
            ValueGen::Normal(x) => r.normal = Some(x),
            ValueGen::Int(x) => r.int = Some(x),
            ValueGen::Bool(p) => r.bool = Some(p),
        }
        r
    }
}

/// A bound of `values: {int: [lo, hi]}`: a number, a dim's name (`T`), or a dim's name plus or
/// minus a number (`T - 1`), resolved with each sample's dims, so `lengths` stay at most `T` and
/// indices within a dim however the sample (or the shrinker) sets it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BoundRepr", into = "BoundRepr")]
pub struct Bound {
    pub dim: Option<String>,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum BoundRepr {
    Int(i64),
    Text(String),
}

impl Bound {
    pub fn fixed(n: i64) -> Bound {
        Bound {
            dim: None,
            offset: n,
        }
    }

    /// The bound under a sample's dims (a dim the sample lacks counts as 0; validation makes
    /// sure every named dim is declared).
    pub fn resolve(&self, dims: &BTreeMap<String, i64>) -> i64 {
        let base = self
            .dim
            .as_ref()
            .map_or(0, |d| dims.get(d).copied().unwrap_or(0));
        base.saturating_add(self.offset)
    }

    /// The bound's least and greatest values over the dims' ranges (`None`: an undeclared dim).
    fn range(&self, dims: &BTreeMap<String, DimSpec>) -> Option<(i64, i64)> {
        match &self.dim {
            None => Some((self.offset, self.offset)),
            Some(d) => dims.get(d).map(|d| {
                (
                    d.min.saturating_add(self.offset),
                    d.max.saturating_add(self.offset),
                )
            }),
        }
    }
}

impl TryFrom<BoundRepr> for Bound {
    type Error = String;
    fn try_from(r: BoundRepr) -> Result<Bound, String> {
        let text = match r {
            BoundRepr::Int(n) => return Ok(Bound::fixed(n)),
            BoundRepr::Text(t) => t,
        };
        let re = regex::Regex::new(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:([+-])\s*([0-9]+))?\s*$")
            .expect("valid regex");
        let c = re.captures(&text).ok_or_else(|| {
            format!("`{text}` is not a bound: expected an integer, a dim name or `dim - n`")
        })?;
        let n: i64 = c
            .get(3)
            .map_or(Ok(0), |m| m.as_str().parse())
            .map_err(|_| format!("`{text}`: the number is too large"))?;
        Ok(Bound {
            dim: Some(c[1].to_string()),
            offset: if c.get(2).is_some_and(|m| m.as_str() == "-") {
                -n
            } else {
                n
            },
        })
    }
}

impl From<Bound> for BoundRepr {
    fn from(b: Bound) -> BoundRepr {
        match b.dim {
            None => BoundRepr::Int(b.offset),
            Some(_) => BoundRepr::Text(b.to_string()),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dim, self.offset) {
            (None, n) => write!(f, "{n}"),
            (Some(d), 0) => f.write_str(d),
            (Some(d), n) if n < 0 => write!(f, "{d} - {}", n.unsigned_abs()),
            (Some(d), n) => write!(f, "{d} + {n}"),
        }
    }
}

/// One entry of a shape: a fixed size or the name of a dim declared under `dims`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DimRef {
    Fixed(i64),
    Named(String),
}

impl fmt::Display for DimRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DimRef::Fixed(n) => write!(f, "{n}"),
            DimRef::Named(s) => f.write_str(s),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default, rename = "import")]
    pub import: Option<String>,
    pub entry: String,
    #[serde(default)]
    pub kwargs: BTreeMap<String, serde_json::Value>,
    #[serde(default = "yes")]
    pub eval: bool,
    /// A state_dict file (`.pt`, `.pth` or `.safetensors`) loaded into the model after it is
    /// built, relative to the case file.
    #[serde(default)]
    pub weights: Option<String>,
    /// Whether every key must match (default true): missing and unexpected keys are an error.
    #[serde(default = "yes")]
    pub weights_strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// A tensor's shape (a tensor input gives it; a scalar or `none` input does not).
    #[serde(default)]
    pub shape: Option<Vec<DimRef>>,
    #[serde(default)]
    pub dtype: Option<DType>,
    #[serde(default)]
    pub dtypes: Option<Vec<DType>>,
    #[serde(default)]
    pub values: Option<ValueGen>,
    /// A list of this many tensors (a size or a dim name), each of `shape`: forward takes a
    /// `List[Tensor]` here (detection models take their images so).
    #[serde(default)]
    pub list: Option<DimRef>,
    /// A Python scalar instead of a tensor: eager gets an `int`, `float` or `bool`, libtorch an
    /// `Int`, `Double` or `Bool` IValue; the traced artifact has it baked in.
    #[serde(default)]
    pub scalar: Option<ScalarKind>,
    /// `None` in every sample (`none: true`), for an `Optional` argument.
    #[serde(default)]
    pub none: bool,
    /// Passed to forward by keyword (`forward(x, mask=...)`) instead of by position.
    #[serde(default)]
    pub keyword: bool,
    /// A safetensors file (relative to the case file's folder) holding this input: the same
    /// tensor in every sample, its shape and dtype the file's (the engine fills them in).
    #[serde(default)]
    pub file: Option<String>,
    /// The tensor's name in `file` (default: the input's name).
    #[serde(default)]
    pub key: Option<String>,
}

/// The Python type of a scalar input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalarKind {
    Int,
    Float,
    Bool,
}

impl ScalarKind {
    /// The 0-d tensor a sample carries the scalar in.
    pub fn dtype(self) -> DType {
        match self {
            ScalarKind::Int => DType::Int64,
            ScalarKind::Float => DType::Float64,
            ScalarKind::Bool => DType::Bool,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ScalarKind::Int => "int",
            ScalarKind::Float => "float",
            ScalarKind::Bool => "bool",
        }
    }
}

/// What kind of argument an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Tensor,
    /// A `List[Tensor]`.
    List,
    Scalar(ScalarKind),
    None,
}

impl InputSpec {
    pub fn kind(&self) -> InputKind {
        match (self.scalar, self.none, &self.list) {
            (Some(k), _, _) => InputKind::Scalar(k),
            (None, true, _) => InputKind::None,
            (None, false, Some(_)) => InputKind::List,
            (None, false, None) => InputKind::Tensor,
        }
    }

    /// The shape of the input's tensor (each list item's; empty for a scalar, which travels as a
    /// 0-d tensor, and for `none`).
    pub fn shape(&self) -> &[DimRef] {
        self.shape.as_deref().unwrap_or(&[])
    }

    /// The dtypes this input is checked with; the first is the one used for tracing.
    pub fn dtypes(&self) -> Vec<DType> {
        match (&self.dtypes, self.dtype, self.scalar) {
            (_, _, Some(k)) => vec![k.dtype()],
            (Some(list), _, _) if !list.is_empty() => list.clone(),
            (_, Some(d), _) => vec![d],
            _ => vec![DType::Float32],
        }
    }

    pub fn trace_dtype(&self) -> DType {
        self.dtypes()[0]
    }

    /// The value generator, drawn in the input's trace dtype.
    pub fn values(&self) -> ValueGen {
        self.values
            .clone()
            .unwrap_or_else(|| self.trace_dtype().default_values())
    }

    /// The tensor's name in its `file`.
    pub fn file_key(&self) -> &str {
        self.key.as_deref().unwrap_or(&self.name)
    }

    /// The input as the worker protocol names it: `x` a tensor, `images[]` a list (its tensors
    /// `images.0`, `images.1`, ... in tensor files), `k:int` / `r:float` / `flag:bool` a scalar
    /// (a 0-d tensor `k` in tensor files), `mask:none` None (no tensor); a trailing `=` passes it
    /// by keyword (`mask:none=`).
    pub fn wire_name(&self) -> String {
        let name = match self.kind() {
            InputKind::Tensor => self.name.clone(),
            InputKind::List => format!("{}[]", self.name),
            InputKind::Scalar(k) => format!("{}:{}", self.name, k.as_str()),
            InputKind::None => format!("{}:none", self.name),
        };
        if self.keyword {
            name + "="
        } else {
            name
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DimSpec {
    pub trace: i64,
    pub min: i64,
    pub max: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(default = "default_samples")]
    pub samples: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_rtol")]
    pub rtol: f64,
    #[serde(default = "default_atol")]
    pub atol: f64,
    /// Tolerances for some outputs, by path glob (`output[*]["scores"]`); the first match wins.
    #[serde(default)]
    pub outputs: Vec<OutputTolerance>,
    /// In dict outputs holding this key (a 1-D score tensor, e.g. `scores`), rows whose scores
    /// tie may come in any order: both sides are put in one canonical order before comparing.
    /// Off by default.
    #[serde(default)]
    pub reorder_ties: Option<String>,
    /// Seconds the whole case may take before its worker is killed (`--timeout` overrides).
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Most elements one sample may hold, over all its inputs (`--max-elements` overrides).
    #[serde(default)]
    pub max_elements: Option<u64>,
    /// When the device probe runs on meta (on CUDA it always runs).
    #[serde(default)]
    pub device_probe: DeviceProbe,
    /// Where the case's eager model and variants run (`--device` overrides; else the project's
    /// `device`; else the CPU).
    #[serde(default)]
    pub device: Option<DeviceChoice>,
}

/// Where a case runs: its eager model and inputs in the worker, its variants in libtorch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA device; a case that asks for it where there is none is an error.
    Cuda,
    /// CUDA when libtorch sees a GPU, else the CPU (said in the run's notes).
    Auto,
}

/// When the meta device probe runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceProbe {
    /// Only when a graph names a device (a Device constant, `aten::cpu`, `cuda` or `device`):
    /// nothing else in a graph can pin one.
    #[default]
    Auto,
    /// Always: also for a branch on the device that tracing erased (`if x.device.type ==
    /// "cpu"`), which leaves nothing in the graph.
    Always,
}

impl Default for CheckSpec {
    fn default() -> Self {
        CheckSpec {
            samples: default_samples(),
            seed: 0,
            rtol: default_rtol(),
            atol: default_atol(),
            outputs: Vec::new(),
            reorder_ties: None,
            timeout_s: None,
            max_elements: None,
            device_probe: DeviceProbe::Auto,
            device: None,
        }
    }
}

/// A tolerance for the outputs whose path matches `path` (`*` matches anything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputTolerance {
    pub path: String,
    #[serde(default)]
    pub rtol: Option<f64>,
    #[serde(default)]
    pub atol: Option<f64>,
}

/// Options for `torch.jit.trace`, for every variant the case traces (`trace: {strict: false}`).
/// A field left out keeps the variant's own option (the harness traces with `check_trace=False`
/// and torch's `strict=True`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// `strict=False` lets the trace record mutable containers (dict and list outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// `check_trace=True` has torch run the trace again on the trace input and raise when the
    /// two traces differ (a `trace_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_trace: Option<bool>,
}

impl TraceSpec {
    /// The options given, as the JSON object the worker's trace exporter takes.
    pub fn options(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

/// A case file as written (format version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub description: Option<String>,
    pub model: ModelSpec,
    pub inputs: Vec<InputSpec>,
    #[serde(default)]
    pub dims: BTreeMap<String, DimSpec>,
    /// The variants as written (`None`: not listed, so the project's or the defaults; see
    /// [`VariantChoice`]).
    #[serde(default)]
    pub variants: Option<Vec<Variant>>,
    /// Options for every variant that traces.
    #[serde(default)]
    pub trace: Option<TraceSpec>,
    #[serde(default)]
    pub check: CheckSpec,
    #[serde(default)]
    pub expect: BTreeMap<Variant, Vec<Pitfall>>,
    /// A TorchScript file the team ships (relative to the case file): checked as the `shipped`
    /// variant, in libtorch, against eager on the same samples.
    #[serde(default)]
    pub artifact: Option<String>,
    /// What differs on one torch line (`"2.12"`: see `torch_lines.rs`): a team that verifies
    /// against several torch releases says where their verdicts part.
    #[serde(default)]
    pub torch: BTreeMap<String, TorchOverride>,
}

/// A case's expectations on one torch line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorchOverride {
    /// Replaces `expect:` for each variant it names (`[]`: it passes on that torch).
    #[serde(default)]
    pub expect: BTreeMap<Variant, Vec<Pitfall>>,
}

fn yes() -> bool {
    true
}
fn default_samples() -> usize {
    24
}
fn default_rtol() -> f64 {
    1e-5
}
fn default_atol() -> f64 {
    1e-6
}

/// What chooses a case's variants besides its own `variants:`: the project's list
/// (`harness.toml`'s `variants`), for a case that lists none, and the run's (`--variants`), for
/// every case. [`VariantChoice::declared`] and [`VariantChoice::runs`] are the only places a
/// case's variants are resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariantChoice {
    /// The variants of every case that does not list its own.
    pub project: Option<Vec<Variant>>,
    /// Exactly these variants for every case, over its own list and the project's.
    pub run: Option<Vec<Variant>>,
}

impl VariantChoice {
    /// The variants a case file declares, which its `expect:` and `trace:` are checked against:
    /// its own `variants:`, else the project's, else the defaults; with `shipped` when it names
    /// an `artifact:`.
    fn declared(&self, spec: &CaseFile) -> Vec<Variant> {
        let listed = spec.variants.clone().or_else(|| self.project.clone());
        with_shipped(listed.unwrap_or_else(Variant::defaults), spec)
    }

    /// The variants a case runs: the run's (with `shipped` when it names an `artifact:`), else
    /// those it declares. Expectations and trace options of variants it does not run are
    /// ignored.
    fn runs(&self, spec: &CaseFile) -> Vec<Variant> {
        match &self.run {
            Some(run) => with_shipped(run.clone(), spec),
            None => self.declared(spec),
        }
    }

    /// Where a case's declared variants came from, for messages: the project's list, or
    /// nothing to say (its own list, or the defaults).
    fn origin(&self, spec: &CaseFile) -> String {
        match (&spec.variants, &self.project) {
            (None, Some(project)) => {
                let names: Vec<String> = project.iter().map(|v| format!("`{v}`")).collect();
                format!(" (the project's `variants`: {})", names.join(", "))
            }
            _ => String::new(),
        }
    }
}

/// `variants`, and `shipped` after them when the case names an `artifact:` and they lack it.
fn with_shipped(mut variants: Vec<Variant>, spec: &CaseFile) -> Vec<Variant> {
    let shipped = Variant::all().find(|v| v.is_shipped());
    if let Some(v) = shipped.filter(|v| spec.artifact.is_some() && !variants.contains(v)) {
        variants.push(v);
    }
    variants
}

/// Where the model comes from, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelOrigin {
    /// A Python file, absolute path.
    Source(PathBuf),
    /// An importable module name.
    Import(String),
}

/// A parsed and validated case, ready to plan and run.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file stem.
    pub name: String,
    /// The case file as given on the command line (or found in a folder).
    pub file: PathBuf,
    pub origin: ModelOrigin,
    pub spec: CaseFile,
    /// The variants it runs, in order ([`VariantChoice::runs`]).
    pub variants: Vec<Variant>,
}

/// A case file that could not be used: one line, naming the file and the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{place}: {message}")]
pub struct CaseError {
    pub file: String,
    /// `:line:column` from the parser, or `: field.path` for later checks, or empty.
    pub place: String,
    pub message: String,
}

impl CaseError {
    fn at_field(file: &Path, field: &str, message: impl Into<String>) -> Self {
        CaseError {
            file: file.display().to_string(),
            place: format!(": {field}"),
            message: message.into(),
        }
    }
}

impl Case {
    /// Read, parse and validate a case file.
    pub fn load(file: &Path) -> Result<Case, CaseError> {
        Case::load_under(file, &[], &VariantChoice::default())
    }

    /// Read, parse and validate a case file whose model files may also live under `roots` (the
    /// project's import roots), its variants chosen with `choice` (the project's and the run's).
    pub fn load_under(
        file: &Path,
        roots: &[PathBuf],
        choice: &VariantChoice,
    ) -> Result<Case, CaseError> {
        let bytes = std::fs::read(file).map_err(|e| CaseError {
            file: file.display().to_string(),
            place: String::new(),
            message: format!("cannot read the case file: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| CaseError {
            file: file.display().to_string(),
            place: String::new(),
            message: format!(
                "the case file is not UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        Case::parse_under(file, &text, roots, choice)
    }

    /// Parse and validate case text that came from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<Case, CaseError> {
        Case::parse_under(file, text, &[], &VariantChoice::default())
    }

    fn parse_under(
        file: &Path,
        text: &str,
        roots: &[PathBuf],
        choice: &VariantChoice,
    ) -> Result<Case, CaseError> {
        if text.trim().is_empty() {
            return Err(CaseError {
                file: file.display().to_string(),
                place: String::new(),
                message: "the case file is empty; expected a mapping with `model` and `inputs`"
                    .into(),
            });
        }
        let spec: CaseFile = serde_yaml::from_str(text).map_err(|e| yaml_error(file, &e))?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "case".into());
        let origin = validate(file, &spec, roots, choice)?;
        Ok(Case {
            name,
            file: file.to_path_buf(),
            origin,
            variants: choice.runs(&spec),
            spec,
        })
    }

    /// The inputs' names, in forward's positional order.
    pub fn input_names(&self) -> Vec<String> {
        self.spec.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// The inputs as the worker protocol names them ([`InputSpec::wire_name`]).
    pub fn wire_names(&self) -> Vec<String> {
        self.spec.inputs.iter().map(InputSpec::wire_name).collect()
    }

    /// The path of an input's `file`, relative to the case file's folder (`None`: not read from a
    /// file).
    pub fn input_file(&self, input: &InputSpec) -> Option<PathBuf> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        input.file.as_ref().map(|f| base.join(f))
    }

    /// The files the case names: `model.weights`, `artifact`, each input's `file`, and in the
    /// model's `kwargs` (weights, vocabularies, fixed inputs)
    /// every string that is the path of an existing file or folder, relative to the case file's
    /// folder or to the working folder (where the model opens it), folders as the files under
    /// them. The cache keys on their contents; a folder too large to hash each time is an error
    /// (the case is then not cached).
    pub fn named_files(&self) -> Result<Vec<PathBuf>, String> {
        const MAX_FILES: usize = 10_000;
        let mut strings = Vec::new();
        for v in self.spec.model.kwargs.values() {
            collect_strings(v, &mut strings);
        }
        let base = self.file.parent().unwrap_or(Path::new("."));
        let mut files = Vec::new();
        for s in strings {
            for p in [base.join(&s), PathBuf::from(&s)] {
                if p.is_file() {
                    files.push(p);
                } else if p.is_dir() {
                    let under = walkdir::WalkDir::new(&p).into_iter().flatten();
                    files.extend(
                        under
                            .filter(|e| e.file_type().is_file())
                            .map(|e| e.into_path())
                            .take(MAX_FILES + 1),
                    );
                }
            }
            if files.len() > MAX_FILES {
                return Err(format!(
                    "model.kwargs names `{s}`, a folder of more than {MAX_FILES} files"
                ));
            }
        }
        files.extend(self.weights());
        files.extend(self.artifact());
        files.extend(self.spec.inputs.iter().filter_map(|i| self.input_file(i)));
        files.sort();
        files.dedup();
        Ok(files)
    }

    /// The `model.weights` file, resolved against the case file's folder.
    pub fn weights(&self) -> Option<PathBuf> {
        let w = self.spec.model.weights.as_deref()?;
        Some(relative_to_case(&self.file, w))
    }

    /// The shipped `artifact:` file, resolved against the case file's folder.
    pub fn artifact(&self) -> Option<PathBuf> {
        let a = self.spec.artifact.as_deref()?;
        Some(relative_to_case(&self.file, a))
    }

    /// The model's `kwargs` with every string that names an existing file or folder relative to
    /// the case file's folder made absolute, so the model opens what the case file means
    /// wherever the harness runs.
    pub fn resolved_kwargs(&self) -> BTreeMap<String, serde_json::Value> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        let mut kwargs = self.spec.model.kwargs.clone();
        for v in kwargs.values_mut() {
            resolve_strings(v, base);
        }
        kwargs
    }

    /// What the worker is asked to export for a variant: its definition's method and options,
    /// with the case's `trace:` options over them for a variant that traces.
    pub fn export_spec(&self, variant: Variant) -> serde_json::Value {
        let mut spec = variant.export_spec(self.artifact().as_deref());
        let Some(options) = spec.get_mut("options").and_then(|o| o.as_object_mut()) else {
            return spec;
        };
        if let (Some(trace), true) = (&self.spec.trace, variant.def().method == "trace") {
            options.extend(trace.options());
        }
        if variant.def().dynamic_dims {
            options.extend(self.dynamic_dims());
        }
        spec
    }

    /// The case's dims as an export's dynamic shapes: `dims` (each dim's `min` and `max`; a dim
    /// whose range is one size is left out, as static) and `shapes` (per tensor input, each
    /// axis's dim name or `null` for a fixed size).
    fn dynamic_dims(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::{json, Value};
        let dims: serde_json::Map<String, Value> = self
            .spec
            .dims
            .iter()
            .filter(|(_, d)| d.min < d.max)
            .map(|(k, d)| (k.clone(), json!({"min": d.min, "max": d.max})))
            .collect();
        let shapes: serde_json::Map<String, Value> = self
            .spec
            .inputs
            .iter()
            .filter_map(|i| {
                let axes = i.shape.as_ref().filter(|_| i.file.is_none())?;
                let axes = axes.iter().map(|a| match a {
                    DimRef::Named(n) if dims.contains_key(n) => json!(n),
                    _ => Value::Null,
                });
                Some((i.name.clone(), Value::Array(axes.collect())))
            })
            .collect();
        serde_json::Map::from_iter([
            ("dims".to_string(), Value::Object(dims)),
            ("shapes".to_string(), Value::Object(shapes)),
        ])
    }

    /// The pitfalls the case file expects for a variant (empty: it must pass) on the torch this
    /// build runs: its `torch.<line>.expect` entry when it has one, else its `expect`.
    pub fn expected(&self, variant: Variant) -> &[Pitfall] {
        let line = crate::torch_line().name;
        self.spec
            .torch
            .get(line)
            .and_then(|o| o.expect.get(&variant))
            .or_else(|| self.spec.expect.get(&variant))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

fn yaml_error(file: &Path, e: &serde_yaml::Error) -> CaseError {
    let mut message = e.to_string();
    let place = match e.location() {
        Some(loc) => {
            // serde_yaml writes " at line L column C" into the message; the place is said once,
            // up front.
            let re = regex::Regex::new(r" at line \d+ column \d+").expect("valid regex");
            message = re.replacen(&message, 1, "").into_owned();
            message.push_str(&suggestion(&message));
            format!(":{}:{}", loc.line(), loc.column())
        }
        None => String::new(),
    };
    CaseError {
        file: file.display().to_string(),
        place,
        message,
    }
}

/// For "unknown field `evals`, expected one of `a`, `b`": "; did you mean `eval`?" when one
/// expected name is close (also for unknown dtypes and other variants).
fn suggestion(message: &str) -> String {
    let re = regex::Regex::new(r"unknown (?:field|variant) `([^`]*)`, expected (?:one of )?(.*)")
        .expect("valid regex");
    let Some(c) = re.captures(message) else {
        return String::new();
    };
    let given = &c[1];
    let best = regex::Regex::new(r"`([^`]*)`")
        .expect("valid regex")
        .captures_iter(&c[2])
        .map(|m| m[1].to_string())
        .map(|name| (strsim::damerau_levenshtein(given, &name), name))
        .min();
    match best {
        Some((d, name)) if d > 0 && d <= (given.len() / 3).max(2) => {
            format!("; did you mean `{name}`?")
        }
        _ => String::new(),
    }
}

/// The folder a case's model files must stay in: the enclosing git repository, else the case
/// file's own folder.
fn containment_root(file: &Path) -> PathBuf {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors()
        .find(|a| a.join(".git").exists())
        .map(Path::to_path_buf)
        .unwrap_or(dir)
}

fn validate(
    file: &Path,
    spec: &CaseFile,
    roots: &[PathBuf],
    choice: &VariantChoice,
) -> Result<ModelOrigin, CaseError> {
    let checked = model_origin(file, &spec.model, roots).and_then(|origin| {
        validate_file(file, "model.weights", spec.model.weights.as_deref())?;
        validate_file(file, "artifact", spec.artifact.as_deref())?;
        validate_inputs(spec)?;
        validate_files(file, spec)?;
        validate_dims(spec)?;
        validate_variants(spec, choice)?;
        validate_check(spec)?;
        Ok(origin)
    });
    checked.map_err(|(field, msg)| CaseError::at_field(file, &field, msg))
}

/// A validation failure: the field and what is wrong with it.
type Bad = (String, String);

fn bad(field: &str, msg: String) -> Bad {
    (field.to_string(), msg)
}

/// A file the case names (`model.weights`, `artifact`) exists, relative to the case file.
fn validate_file(file: &Path, field: &str, name: Option<&str>) -> Result<(), Bad> {
    match name {
        Some(n) if !relative_to_case(file, n).is_file() => Err(bad(
            field,
            format!(
                "{n} is not a file (looked for {})",
                relative_to_case(file, n).display()
            ),
        )),
        _ => Ok(()),
    }
}

/// A path named in a case file, relative to the case file's folder (absolute ones stay).
pub fn relative_to_case(file: &Path, name: &str) -> PathBuf {
    let base = file.parent().unwrap_or(Path::new("."));
    let path = base.join(name);
    std::path::absolute(&path).unwrap_or(path)
}

/// Where the model comes from: a Python file inside the repository (or under one of the
/// project's import `roots`), or a module name.
fn model_origin(file: &Path, model: &ModelSpec, roots: &[PathBuf]) -> Result<ModelOrigin, Bad> {
    Ok(match (&model.source, &model.import) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "model",
                "give exactly one of `source` and `import`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(bad(
                "model",
                "missing `source` (a Python file) or `import` (a module)".into(),
            ))
        }
        (Some(src), None) => {
            let base = file.parent().unwrap_or(Path::new("."));
            let path = base.join(src);
            if !path.is_file() {
                return Err(bad(
                    "model.source",
                    format!("{src} does not exist (looked for {})", path.display()),
                ));
            }
            let path = path.canonicalize().unwrap_or(path);
            let root = containment_root(file);
            let under_a_root = roots
                .iter()
                .filter_map(|r| r.canonicalize().ok())
                .any(|r| path.starts_with(r));
            if !path.starts_with(&root) && !under_a_root {
                return Err(bad(
                    "model.source",
                    format!(
                        "{src} resolves to {}, outside {} (model files must stay inside the \
                         repository, or under one of harness.toml's `roots`)",
                        path.display(),
                        root.display()
                    ),
                ));
            }
            ModelOrigin::Source(path)
        }
        (None, Some(module)) => {
            let ok = !module.is_empty()
                && module.split('.').all(|p| {
                    p.chars()
                        .next()
                        .is_some_and(|c| c.is_alphabetic() || c == '_')
                        && p.chars().all(|c| c.is_alphanumeric() || c == '_')
                });
            if !ok {
                return Err(bad(
                    "model.import",
                    format!("`{module}` is not a Python module name"),
                ));
            }
            ModelOrigin::Import(module.clone())
        }
    })
}

/// The entry and the inputs: names, lists, dtypes, shapes and value generators.
fn validate_inputs(spec: &CaseFile) -> Result<(), Bad> {
    let model = &spec.model;
    if model.entry.trim().is_empty() {
        return Err(bad(
            "model.entry",
            "expected the name of a class or factory callable".into(),
        ));
    }
    if spec.inputs.is_empty() {
        return Err(bad("inputs", "expected at least one input".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let identifier = input
            .name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && input.name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !identifier {
            return Err(bad(
                &format!("inputs[{i}].name"),
                format!("`{}` is not a Python identifier", input.name),
            ));
        }
        match &input.list {
            Some(DimRef::Fixed(n)) if *n < 0 => {
                return Err(bad(
                    &format!("inputs[{i}].list"),
                    format!("length {n} is negative"),
                ));
            }
            Some(DimRef::Named(d)) if !spec.dims.contains_key(d) => {
                return Err(bad(
                    &format!("inputs[{i}].list"),
                    format!("dim `{d}` is not declared under `dims`"),
                ));
            }
            _ => {}
        }
        if !seen.insert(input.name.as_str()) {
            return Err(bad(
                &format!("inputs[{i}].name"),
                format!("duplicate input `{}`", input.name),
            ));
        }
        if input.dtype.is_some() && input.dtypes.is_some() {
            return Err(bad(
                &format!("inputs[{i}]"),
                "give `dtype` or `dtypes`, not both".into(),
            ));
        }
        if input.dtypes.as_ref().is_some_and(|d| d.is_empty()) {
            return Err(bad(
                &format!("inputs[{i}].dtypes"),
                "expected at least one dtype".into(),
            ));
        }
        validate_kind(i, input)?;
        for (j, d) in input.shape().iter().enumerate() {
            match d {
                DimRef::Fixed(n) if *n < 0 => {
                    return Err(bad(
                        &format!("inputs[{i}].shape[{j}]"),
                        format!("size {n} is negative"),
                    ))
                }
                DimRef::Named(name) if !spec.dims.contains_key(name) => {
                    return Err(bad(
                        &format!("inputs[{i}].shape[{j}]"),
                        format!("dim `{name}` is not declared under `dims`"),
                    ))
                }
                _ => {}
            }
        }
        match input.values() {
            ValueGen::Uniform([lo, hi]) if !(lo < hi && lo.is_finite() && hi.is_finite()) => {
                return Err(bad(
                    &format!("inputs[{i}].values.uniform"),
                    format!("expected finite [lo, hi] with lo < hi, got [{lo}, {hi}]"),
                ))
            }
            ValueGen::Normal([_, std]) if !(std >= 0.0 && std.is_finite()) => {
                return Err(bad(
                    &format!("inputs[{i}].values.normal"),
                    format!("expected a finite std >= 0, got {std}"),
                ))
            }
            ValueGen::Int(bounds) => validate_int_bounds(spec, i, &bounds)?,
            ValueGen::Bool(p) if !(0.0..=1.0).contains(&p) => {
                return Err(bad(
                    &format!("inputs[{i}].values.bool"),
                    format!("expected a probability in [0, 1], got {p}"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A tensor gives its `shape`; a scalar or `none` input gives neither a shape nor dtypes, and a
/// scalar only values of its type.
fn validate_kind(i: usize, input: &InputSpec) -> Result<(), Bad> {
    let given = [
        input.shape.is_some(),
        input.scalar.is_some(),
        input.none,
        input.file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(bad(
            &format!("inputs[{i}]"),
            "give exactly one of `shape` (a tensor), `scalar: int|float|bool`, `none: true` or \
             `file` (a safetensors file)"
                .into(),
        ));
    }
    if input.key.is_some() && input.file.is_none() {
        return Err(bad(
            &format!("inputs[{i}].key"),
            "`key` names a tensor in `file`, and the input has no `file`".into(),
        ));
    }
    let tensor_only = [
        ("dtype", input.dtype.is_some()),
        ("dtypes", input.dtypes.is_some()),
        ("list", input.list.is_some()),
        ("values", input.file.is_some() && input.values.is_some()),
    ];
    let what = match input.kind() {
        InputKind::Scalar(k) => format!("a scalar {}", k.as_str()),
        InputKind::None => "a `none` input".into(),
        _ if input.file.is_some() => "an input read from a file".into(),
        _ => return Ok(()),
    };
    if let Some((field, _)) = tensor_only.iter().find(|(_, given)| *given) {
        return Err(bad(
            &format!("inputs[{i}].{field}"),
            format!("{what} takes no `{field}` ({})", not_drawn(input)),
        ));
    }
    let fits = matches!(
        (input.kind(), &input.values),
        (_, None)
            | (InputKind::Scalar(ScalarKind::Int), Some(ValueGen::Int(_)))
            | (InputKind::Scalar(ScalarKind::Bool), Some(ValueGen::Bool(_)))
            | (
                InputKind::Scalar(ScalarKind::Float),
                Some(ValueGen::Uniform(_) | ValueGen::Normal(_))
            )
    );
    if fits {
        return Ok(());
    }
    let expected = match input.kind() {
        InputKind::Scalar(ScalarKind::Int) => "takes `int: [lo, hi]`",
        InputKind::Scalar(ScalarKind::Float) => {
            "takes `uniform: [lo, hi]` or `normal: [mean, std]`"
        }
        InputKind::Scalar(ScalarKind::Bool) => "takes `bool: p`",
        _ => "takes no `values` (it is None in every sample)",
    };
    Err(bad(
        &format!("inputs[{i}].values"),
        format!("{what} {expected}"),
    ))
}

/// Why an input takes no dtype, list or values: it is no tensor, or its tensor is the file's.
fn not_drawn(input: &InputSpec) -> &'static str {
    if input.file.is_some() {
        "its shape, dtype and values are the file's"
    } else {
        "it is not a tensor"
    }
}

/// Each input's `file` exists (relative to the case file's folder).
fn validate_files(file: &Path, spec: &CaseFile) -> Result<(), Bad> {
    let base = file.parent().unwrap_or(Path::new("."));
    for (i, input) in spec.inputs.iter().enumerate() {
        if let Some(f) = &input.file {
            let path = base.join(f);
            if !path.is_file() {
                return Err(bad(
                    &format!("inputs[{i}].file"),
                    format!("{f} does not exist (looked for {})", path.display()),
                ));
            }
        }
    }
    Ok(())
}

/// `int: [lo, hi]`: dims the bounds name are declared, and `lo <= hi` under every sample's dims
/// (bounds on the same dim compare their offsets; others their extremes over the dims' ranges).
fn validate_int_bounds(spec: &CaseFile, i: usize, bounds: &[Bound; 2]) -> Result<(), Bad> {
    let field = format!("inputs[{i}].values.int");
    let mut ranges = Vec::new();
    for (j, b) in bounds.iter().enumerate() {
        match (b.range(&spec.dims), &b.dim) {
            (Some(r), _) => ranges.push(r),
            (None, d) => {
                return Err(bad(
                    &format!("{field}[{j}]"),
                    format!(
                        "dim `{}` is not declared under `dims`",
                        d.as_deref().unwrap_or_default()
                    ),
                ))
            }
        }
    }
    let [lo, hi] = bounds;
    let ok = match (&lo.dim, &hi.dim) {
        (Some(a), Some(b)) if a == b => lo.offset <= hi.offset,
        _ => ranges[0].1 <= ranges[1].0,
    };
    if ok {
        return Ok(());
    }
    let why = if lo.dim.is_none() && hi.dim.is_none() {
        String::new()
    } else {
        format!(
            " under every sample's dims (lo can be {}, hi {})",
            ranges[0].1, ranges[1].0
        )
    };
    Err(bad(
        &field,
        format!("expected [lo, hi] with lo <= hi{why}, got [{lo}, {hi}]"),
    ))
}

/// Each dim's range holds its trace value.
fn validate_dims(spec: &CaseFile) -> Result<(), Bad> {
    for (name, d) in &spec.dims {
        if d.min < 0 || d.min > d.max {
            return Err(bad(
                &format!("dims.{name}"),
                format!("expected 0 <= min <= max, got min {} max {}", d.min, d.max),
            ));
        }
        if d.trace < d.min || d.trace > d.max {
            return Err(bad(
                &format!("dims.{name}.trace"),
                format!(
                    "trace {} is outside [min {}, max {}]",
                    d.trace, d.min, d.max
                ),
            ));
        }
    }
    Ok(())
}

/// The variants the case declares, and expectations and trace options only for them (whatever
/// the run chooses: `--variants` never makes a case file invalid).
fn validate_variants(spec: &CaseFile, choice: &VariantChoice) -> Result<(), Bad> {
    let declared = choice.declared(spec);
    let origin = choice.origin(spec);
    if declared.is_empty() {
        return Err(bad(
            "variants",
            format!("expected at least one of {}", Variant::names()),
        ));
    }
    if let Some(v) = declared.iter().find(|v| v.is_shipped()) {
        if spec.artifact.is_none() {
            return Err(bad(
                "variants",
                format!("`{v}` runs the file `artifact:` names, and the case names none"),
            ));
        }
    }
    if spec.trace.is_some() && !declared.iter().any(|v| v.def().method == "trace") {
        return Err(bad(
            "trace",
            format!(
                "no variant of the case traces{origin} (add `traced` to `variants`, or drop \
                 `trace`)"
            ),
        ));
    }
    for v in spec.expect.keys() {
        if !declared.contains(v) {
            return Err(bad(
                &format!("expect.{v}"),
                format!("`{v}` is not among the case's variants{origin}"),
            ));
        }
    }
    for (line, over) in &spec.torch {
        if !crate::torch_lines::LINES.iter().any(|l| l.name == line) {
            return Err(bad(
                &format!("torch.{line}"),
                format!(
                    "not a torch line: expected one of {}",
                    crate::torch_lines::LINES
                        .iter()
                        .map(|l| format!("\"{}\"", l.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if let Some(v) = over.expect.keys().find(|v| !declared.contains(v)) {
            return Err(bad(
                &format!("torch.{line}.expect.{v}"),
                format!("`{v}` is not among the case's variants{origin}"),
            ));
        }
    }
    Ok(())
}

/// The `check` section: budgets, limits and tolerances.
fn validate_check(spec: &CaseFile) -> Result<(), Bad> {
    if spec.check.samples > 10_000 {
        return Err(bad(
            "check.samples",
            "expected at most 10000 samples".into(),
        ));
    }
    for (i, o) in spec.check.outputs.iter().enumerate() {
        for v in [o.rtol, o.atol].into_iter().flatten() {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(bad(
                    &format!("check.outputs[{i}]"),
                    format!("expected a finite tolerance >= 0, got {v}"),
                ));
            }
        }
    }
    if let Some(t) = spec.check.timeout_s {
        if !(t > 0.0 && t.is_finite()) {
            return Err(bad(
                "check.timeout_s",
                format!("expected a number of seconds > 0, got {t}"),
            ));
        }
    }
    if spec.check.max_elements == Some(0) {
        return Err(bad(
            "check.max_elements",
            "expected a budget of at least 1 element".into(),
        ));
    }
    for (field, v) in [
        ("check.rtol", spec.check.rtol),
        ("check.atol", spec.check.atol),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(bad(
                field,
                format!("expected a finite tolerance >= 0, got {v}"),
            ));
        }
    }
    Ok(())
}

/// Every string in a kwargs value, however deep.
fn resolve_strings(v: &mut serde_json::Value, base: &Path) {
    match v {
        serde_json::Value::String(s) if !s.is_empty() && base.join(&*s).exists() => {
            let p = base.join(&*s);
            *s = std::path::absolute(&p).unwrap_or(p).display().to_string();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| resolve_strings(i, base)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| resolve_strings(i, base)),
        _ => {}
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if !s.is_empty() => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        serde_json::Value::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// A case's identity: its path relative to the folder given on the command line that holds it,
/// without the extension (`zoo/resnet18`), so two case files with the same stem in different
/// folders never share artifacts, counterexamples or snapshots; the file stem for a file given
/// by itself.
pub fn case_name(roots: &[PathBuf], file: &Path) -> String {
    let stem = |p: &Path| p.with_extension("").display().to_string();
    roots
        .iter()
        .filter(|r| r.is_dir())
        .find_map(|r| file.strip_prefix(r).ok())
        .map(|rel| stem(rel).replace(std::path::MAIN_SEPARATOR, "/"))
        .unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// Every case file under the given files and folders (`.yaml`/`.yml`, sorted, deduplicated).
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, CaseError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            for entry in walkdir::WalkDir::new(p).sort_by_file_name() {
                let entry = entry.map_err(|e| CaseError {
                    file: p.display().to_string(),
                    place: String::new(),
                    message: format!("cannot list the folder: {e}"),
                })?;
                let path = entry.path();
                let is_yaml =
                    path.extension().is_some_and(|e| e == "yaml" || e == "yml") && path.is_file();
                if is_yaml {
                    files.push(path.to_path_buf());
                }
            }
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            return Err(CaseError {
                file: p.display().to_string(),
                place: String::new(),
                message: "no such case file or folder".into(),
            });
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
description: MyCell
model:
  source: MODEL
  entry: MyCell
inputs:
  - name: x
    shape: [B, 4]
  - {name: h, shape: [B, 4], dtypes: [float32, float64]}
dims:
  B: {trace: 3, min: 1, max: 8}
expect:
  traced: [control_flow_erasure]
"#;

    fn with_model(text: &str) -> (tempfile::TempDir, PathBuf, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.py"), "import torch\n").unwrap();
        let file = dir.path().join("case.yaml");
        (dir, file, text.replace("MODEL", "m.py"))
    }

    /// Parse `text` as a case file and compare the error (or "ok") with `expect`.
    #[track_caller]
    fn check(text: &str, expect: &str) {
        let (dir, file, text) = with_model(text);
        let got = match Case::parse(&file, &text) {
            Ok(_) => "ok".to_string(),
            Err(e) => e
                .to_string()
                .replace(&file.display().to_string(), "case.yaml")
                .replace(&dir.path().display().to_string(), "DIR"),
        };
        assert_eq!(got, expect);
    }

    #[test]
    fn good_case_parses_with_defaults() {
        let (_dir, file, text) = with_model(GOOD);
        let case = Case::parse(&file, &text).unwrap();
        assert_eq!(case.name, "case");
        assert_eq!(
            case.variants,
            vec![
                Variant::named("traced").unwrap(),
                Variant::named("scripted").unwrap()
            ]
        );
        assert_eq!(case.spec.check, CheckSpec::default());
        assert_eq!(case.spec.inputs[0].trace_dtype(), DType::Float32);
        assert_eq!(
            case.spec.inputs[1].dtypes(),
            vec![DType::Float32, DType::Float64]
        );
        assert_eq!(case.spec.inputs[0].values(), ValueGen::Uniform([-1.0, 1.0]));
        assert_eq!(
            case.expected(Variant::named("traced").unwrap()),
            &[Pitfall::ControlFlowErasure]
        );
        assert!(case
            .expected(Variant::named("scripted").unwrap())
            .is_empty());
        assert!(matches!(case.origin, ModelOrigin::Source(ref p) if p.ends_with("m.py")));
    }

    #[test]
    fn errors_name_the_place() {
        check(GOOD, "ok");
        check(
            "",
            "case.yaml: the case file is empty; expected a mapping with `model` and `inputs`",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}]\nvariant: [traced]\n",
            "case.yaml:3:1: unknown field `variant`, expected one of `description`, `model`, \
             `inputs`, `dims`, `variants`, `trace`, `check`, `expect`, `artifact`, `torch`; did you mean \
             `variants`?",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}\n",
            "case.yaml:3:1: did not find expected ',' or ']', while parsing a flow sequence at line 2 column 9",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs:\n  - {name: x, shape: [2], dtype: float33}\n",
            "case.yaml:3:34: inputs[0].dtype: unknown variant `float33`, expected one of \
             `float32`, `float64`, `float16`, `bfloat16`, `uint8`, `int8`, `int16`, `int32`, \
             `int64`, `bool`; did you mean `float32`?",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [C]}]\n",
            "case.yaml: inputs[0].shape[0]: dim `C` is not declared under `dims`",
        );
        check(
            "model: {source: nope.py, entry: E}\ninputs: [{name: x, shape: [2]}]\n",
            "case.yaml: model.source: nope.py does not exist (looked for DIR/nope.py)",
        );
    }

    #[test]
    fn files_the_case_names_resolve_against_its_folder() {
        let base = "model: {source: MODEL, entry: E, WEIGHTS}\ninputs: [{name: x, shape: [2]}]\n";
        let case = |w: &str, extra: &str| format!("{}{extra}", base.replace("WEIGHTS", w));
        check(
            &case("weights: w.pt", ""),
            "case.yaml: model.weights: w.pt is not a file (looked for DIR/w.pt)",
        );
        check(
            &case("kwargs: {}", "artifact: shipped/model.pt\n"),
            "case.yaml: artifact: shipped/model.pt is not a file (looked for DIR/shipped/model.pt)",
        );
        check(
            &case("kwargs: {}", "variants: [traced, shipped]\n"),
            "case.yaml: variants: `shipped` runs the file `artifact:` names, and the case names none",
        );
        check(
            &case("weights_strict: maybe", ""),
            "case.yaml:1:49: model.weights_strict: invalid type: string \"maybe\", expected a boolean",
        );
        // Present files: the shipped variant joins the case's variants, and every named file is
        // resolved from the case file's folder and keys the cache.
        let (dir, file, text) = with_model(&case(
            "weights: w.pt, kwargs: {vocab: v.txt, other: not-a-file}",
            "artifact: a.pt\nexpect: {shipped: [shape_specialization]}\n",
        ));
        for f in ["w.pt", "a.pt", "v.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let c = Case::parse(&file, &text).unwrap();
        let names: Vec<&str> = c.variants.iter().map(|v| v.as_str()).collect();
        assert_eq!(names, ["traced", "scripted", "shipped"]);
        assert_eq!(c.weights(), Some(dir.path().join("w.pt")));
        assert_eq!(c.artifact(), Some(dir.path().join("a.pt")));
        let kwargs = c.resolved_kwargs();
        assert_eq!(
            kwargs["vocab"],
            dir.path().join("v.txt").display().to_string()
        );
        assert_eq!(kwargs["other"], "not-a-file");
        let named = c.named_files().unwrap();
        for f in ["w.pt", "a.pt", "v.txt"] {
            assert!(named.contains(&dir.path().join(f)), "{f}: {named:?}");
        }
    }

    #[test]
    fn model_files_may_live_under_the_project_roots() {
        let dir = tempfile::tempdir().unwrap();
        let (cases, src) = (dir.path().join("repo/cases"), dir.path().join("src"));
        std::fs::create_dir_all(&cases).unwrap();
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::create_dir_all(dir.path().join("repo/.git")).unwrap();
        std::fs::write(src.join("pkg/m.py"), "").unwrap();
        let file = cases.join("c.yaml");
        std::fs::write(
            &file,
            "model: {source: ../../src/pkg/m.py, entry: M}\ninputs: [{name: x, shape: [2]}]\n",
        )
        .unwrap();
        let e = Case::load(&file).unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        let c =
            Case::load_under(&file, std::slice::from_ref(&src), &VariantChoice::default()).unwrap();
        assert_eq!(
            c.origin,
            ModelOrigin::Source(src.join("pkg/m.py").canonicalize().unwrap())
        );
    }

    #[test]
    fn expectations_may_differ_per_torch_line() {
        let (_dir, file, text) = with_model(&format!(
            "{GOOD}  scripted: [runtime_error]\ntorch:\n  \"{}\": {{expect: {{traced: []}}}}\n  \"{}\": {{expect: {{scripted: [output_mismatch]}}}}\n",
            crate::torch_line().name,
            crate::torch_lines::LINES[0].name,
        ));
        let case = Case::parse(&file, &text).unwrap();
        let (traced, scripted) = (
            Variant::named("traced").unwrap(),
            Variant::named("scripted").unwrap(),
        );
        // This build's line empties traced's expectation; another line's entry does not apply.
        assert!(case.expected(traced).is_empty());
        assert_eq!(case.expected(scripted), [Pitfall::RuntimeError]);
        let base = "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}]\n";
        check(
            &format!("{base}torch: {{\"2.9\": {{expect: {{traced: []}}}}}}\n"),
            "case.yaml: torch.2.9: not a torch line: expected one of \"2.11\", \"2.12\", \"2.13\"",
        );
        check(
            &format!(
                "{base}variants: [traced]\ntorch: {{\"2.12\": {{expect: {{scripted: []}}}}}}\n"
            ),
            "case.yaml: torch.2.12.expect.scripted: `scripted` is not among the case's variants",
        );
    }

    #[test]
    fn semantic_errors() {
        let base = "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [B]}]\n";
        check(
            &format!("{base}dims: {{B: {{trace: 9, min: 1, max: 8}}}}\n"),
            "case.yaml: dims.B.trace: trace 9 is outside [min 1, max 8]",
        );
        check(
            &format!("{base}dims: {{B: {{trace: 2, min: 1, max: 8}}}}\nvariants: [traced]\nexpect: {{scripted: [runtime_error]}}\n"),
            "case.yaml: expect.scripted: `scripted` is not among the case's variants",
        );
        check(
            "model: {source: MODEL, import: os, entry: E}\ninputs: [{name: x, shape: [2]}]\n",
            "case.yaml: model: give exactly one of `source` and `import`, not both",
        );
        check(
            "model: {import: torchvision.models, entry: resnet18}\ninputs: [{name: x, shape: [2], values: {int: [3, 1]}}]\n",
            "case.yaml: inputs[0].values.int: expected [lo, hi] with lo <= hi, got [3, 1]",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2], values: {unifrm: [0, 1]}}]\n",
            "case.yaml:2:41: inputs[0].values: unknown field `unifrm`, expected one of `uniform`, \
             `normal`, `int`, `bool`; did you mean `uniform`?",
        );
        check(
            "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2], values: {}}]\n",
            "case.yaml:2:10: inputs[0]: `values` expects exactly one of `uniform: [lo, hi]`, \
             `normal: [mean, std]`, `int: [lo, hi]`, `bool: p`",
        );
    }

    #[test]
    fn int_bounds_may_name_dims() {
        let base = "model: {source: MODEL, entry: E}\ndims: {T: {trace: 4, min: 2, max: 6}}\n";
        let input = |values: &str| {
            format!("{base}inputs: [{{name: i, shape: [3], dtype: int64, values: {{int: {values}}}}}]\n")
        };
        let (_dir, file, text) = with_model(&input("[0, T - 1]"));
        let case = Case::parse(&file, &text).unwrap();
        let ValueGen::Int([lo, hi]) = case.spec.inputs[0].values() else {
            panic!("an int generator")
        };
        let dims = BTreeMap::from([("T".to_string(), 5)]);
        assert_eq!((lo.resolve(&dims), hi.resolve(&dims)), (0, 4));
        assert_eq!(hi.to_string(), "T - 1");
        check(&input("[1, T]"), "ok");
        check(&input("[T-2, T+1]"), "ok");
        check(&input("[2, T]"), "ok");
        check(
            &input("[0, N]"),
            "case.yaml: inputs[0].values.int[1]: dim `N` is not declared under `dims`",
        );
        check(
            &input("[3, T]"),
            "case.yaml: inputs[0].values.int: expected [lo, hi] with lo <= hi under every \
             sample's dims (lo can be 3, hi 2), got [3, T]",
        );
        check(
            &input("[T, T - 1]"),
            "case.yaml: inputs[0].values.int: expected [lo, hi] with lo <= hi under every \
             sample's dims (lo can be 6, hi 1), got [T, T - 1]",
        );
        check(
            &input("[0, T * 2]"),
            "case.yaml:3:60: inputs[0].values.int: `T * 2` is not a bound: expected an \
             integer, a dim name or `dim - n`",
        );
    }

    #[test]
    fn scalar_none_and_keyword_inputs() {
        let base = "model: {source: MODEL, entry: E}\ninputs:\n  - {name: x, shape: [2]}\n";
        let text = format!(
            "{base}  - {{name: k, scalar: int, values: {{int: [1, 4]}}}}\n  - {{name: r, scalar: \
             float}}\n  - {{name: flag, scalar: bool}}\n  - {{name: mask, none: true, keyword: \
             true}}\n  - {{name: m, shape: [2], keyword: true}}\n"
        );
        let (_dir, file, text) = with_model(&text);
        let case = Case::parse(&file, &text).unwrap();
        assert_eq!(
            case.wire_names(),
            ["x", "k:int", "r:float", "flag:bool", "mask:none=", "m="]
        );
        let inputs = &case.spec.inputs;
        assert_eq!(inputs[1].kind(), InputKind::Scalar(ScalarKind::Int));
        assert_eq!(inputs[2].dtypes(), vec![DType::Float64]);
        assert_eq!(inputs[2].values(), ValueGen::Uniform([-1.0, 1.0]));
        assert!(inputs[1].shape().is_empty() && inputs[4].kind() == InputKind::None);
        let one = |input: &str| format!("{base}  - {input}\n");
        check(
            &one("{name: k}"),
            "case.yaml: inputs[1]: give exactly one of `shape` (a tensor), `scalar: \
             int|float|bool`, `none: true` or `file` (a safetensors file)",
        );
        check(
            &one("{name: k, scalar: int, shape: []}"),
            "case.yaml: inputs[1]: give exactly one of `shape` (a tensor), `scalar: \
             int|float|bool`, `none: true` or `file` (a safetensors file)",
        );
        check(
            &one("{name: k, scalar: int, dtype: int32}"),
            "case.yaml: inputs[1].dtype: a scalar int takes no `dtype` (it is not a tensor)",
        );
        check(
            &one("{name: k, scalar: int, values: {uniform: [0, 1]}}"),
            "case.yaml: inputs[1].values: a scalar int takes `int: [lo, hi]`",
        );
        check(
            &one("{name: k, scalar: float, values: {int: [0, 1]}}"),
            "case.yaml: inputs[1].values: a scalar float takes `uniform: [lo, hi]` or `normal: \
             [mean, std]`",
        );
        check(
            &one("{name: m, none: true, values: {bool: 0.5}}"),
            "case.yaml: inputs[1].values: a `none` input takes no `values` (it is None in every \
             sample)",
        );
        check(
            &one("{name: m, none: true, list: 2}"),
            "case.yaml: inputs[1].list: a `none` input takes no `list` (it is not a tensor)",
        );
        check(
            &one("{name: k, scalar: str}"),
            "case.yaml:4:23: inputs[1].scalar: unknown variant `str`, expected one of `int`, \
             `float`, `bool`",
        );
    }

    #[test]
    fn file_inputs() {
        let base = "model: {source: MODEL, entry: E}\ninputs:\n  - {name: x, shape: [2]}\n";
        let (dir, file, text) = with_model(&format!(
            "{base}  - {{name: tokens, file: data/t.safetensors, key: ids}}\n"
        ));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/t.safetensors"), b"").unwrap();
        let case = Case::parse(&file, &text).unwrap();
        let tokens = &case.spec.inputs[1];
        assert_eq!(tokens.kind(), InputKind::Tensor);
        assert_eq!(tokens.file_key(), "ids");
        assert_eq!(case.wire_names(), ["x", "tokens"]);
        let path = dir.path().join("data/t.safetensors");
        assert_eq!(case.input_file(tokens), Some(path.clone()));
        // The cache keys on the file's contents.
        assert_eq!(case.named_files(), Ok(vec![path]));
        let one = |input: &str| format!("{base}  - {input}\n");
        check(
            &one("{name: t, file: nope.safetensors}"),
            "case.yaml: inputs[1].file: nope.safetensors does not exist (looked for \
             DIR/nope.safetensors)",
        );
        check(
            &one("{name: t, file: m.py, shape: [2]}"),
            "case.yaml: inputs[1]: give exactly one of `shape` (a tensor), `scalar: \
             int|float|bool`, `none: true` or `file` (a safetensors file)",
        );
        check(
            &one("{name: t, file: m.py, dtype: int64}"),
            "case.yaml: inputs[1].dtype: an input read from a file takes no `dtype` (its shape, \
             dtype and values are the file's)",
        );
        check(
            &one("{name: t, file: m.py, values: {int: [0, 1]}}"),
            "case.yaml: inputs[1].values: an input read from a file takes no `values` (its \
             shape, dtype and values are the file's)",
        );
        check(
            &one("{name: t, shape: [2], key: ids}"),
            "case.yaml: inputs[1].key: `key` names a tensor in `file`, and the input has no `file`",
        );
    }

    #[test]
    fn trace_options_reach_only_tracing_variants() {
        let base = "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}]\n";
        let (_dir, file, text) = with_model(&format!("{base}trace: {{strict: false}}\n"));
        let case = Case::parse(&file, &text).unwrap();
        let traced = case.export_spec(Variant::named("traced").unwrap());
        assert_eq!(traced["options"], serde_json::json!({"strict": false}));
        let scripted = case.export_spec(Variant::named("scripted").unwrap());
        assert_eq!(scripted["options"], serde_json::json!({}));
        let (_dir, file, text) = with_model(base);
        let case = Case::parse(&file, &text).unwrap();
        let traced = case.export_spec(Variant::named("traced").unwrap());
        assert_eq!(traced["options"], serde_json::json!({}));
        check(
            &format!("{base}trace: {{check_trace: true, strict: false}}\n"),
            "ok",
        );
        check(
            &format!("{base}variants: [scripted]\ntrace: {{strict: false}}\n"),
            "case.yaml: trace: no variant of the case traces (add `traced` to `variants`, or \
             drop `trace`)",
        );
        check(
            &format!("{base}trace: {{strict: false, check: true}}\n"),
            "case.yaml:3:24: trace: unknown field `check`, expected `strict` or `check_trace`",
        );
        check(
            &format!("{base}trace: {{strict: 0}}\n"),
            "case.yaml:3:17: trace.strict: invalid type: integer `0`, expected a boolean",
        );
    }

    /// The variants `text` runs under `choice` (with an `a.pt` beside it), or its error.
    #[track_caller]
    fn runs(text: &str, choice: &VariantChoice) -> Result<Vec<&'static str>, String> {
        let (dir, file, text) = with_model(text);
        std::fs::write(dir.path().join("a.pt"), "").unwrap();
        match Case::parse_under(&file, &text, &[], choice) {
            Ok(c) => Ok(c.variants.iter().map(|v| v.as_str()).collect()),
            Err(e) => Err(e
                .to_string()
                .replace(&file.display().to_string(), "case.yaml")),
        }
    }

    fn chosen(names: &[&str]) -> Option<Vec<Variant>> {
        Some(names.iter().map(|n| Variant::named(n).unwrap()).collect())
    }

    #[test]
    fn the_case_lists_its_variants_else_the_project_and_the_run_overrides_both() {
        let base = "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}]\n";
        let own = format!("{base}variants: [traced]\n");
        let none = VariantChoice::default();
        let project = VariantChoice {
            project: chosen(&["scripted", "frozen"]),
            run: None,
        };
        let run = VariantChoice {
            run: chosen(&["optimized"]),
            ..project.clone()
        };
        assert_eq!(runs(base, &none), Ok(vec!["traced", "scripted"]));
        assert_eq!(runs(base, &project), Ok(vec!["scripted", "frozen"]));
        assert_eq!(runs(&own, &project), Ok(vec!["traced"]));
        assert_eq!(runs(base, &run), Ok(vec!["optimized"]));
        assert_eq!(runs(&own, &run), Ok(vec!["optimized"]));
        // `shipped` joins exactly the cases that name an artifact, whatever chose the rest.
        let shipped = format!("{base}artifact: a.pt\n");
        assert_eq!(
            runs(&shipped, &project),
            Ok(vec!["scripted", "frozen", "shipped"])
        );
        assert_eq!(runs(&shipped, &run), Ok(vec!["optimized", "shipped"]));
        let only_shipped = format!("{shipped}variants: [shipped]\n");
        assert_eq!(runs(&only_shipped, &run), Ok(vec!["optimized", "shipped"]));
    }

    #[test]
    fn expectations_and_trace_options_of_variants_not_run_are_ignored() {
        let base = "model: {source: MODEL, entry: E}\ninputs: [{name: x, shape: [2]}]\n";
        let scripted_only = VariantChoice {
            project: None,
            run: chosen(&["scripted"]),
        };
        // The case declares `traced` (by default): under `--variants scripted` its expectation
        // and trace options are not judged, and the case file stays valid.
        let text =
            format!("{base}trace: {{strict: false}}\nexpect: {{traced: [control_flow_erasure]}}\n");
        assert_eq!(runs(&text, &scripted_only), Ok(vec!["scripted"]));
        let (_dir, file, yaml) = with_model(&text);
        let case = Case::parse_under(&file, &yaml, &[], &scripted_only).unwrap();
        let scripted = Variant::named("scripted").unwrap();
        assert_eq!(case.export_spec(scripted)["options"], serde_json::json!({}));
        assert!(case.expected(scripted).is_empty());
        // An expectation for a variant the case does not declare is an error, with or without
        // `--variants`: the case file is valid or not on its own.
        let stale = format!("{base}variants: [scripted]\nexpect: {{traced: [trace_error]}}\n");
        let error = "case.yaml: expect.traced: `traced` is not among the case's variants";
        assert_eq!(runs(&stale, &VariantChoice::default()), Err(error.into()));
        assert_eq!(runs(&stale, &scripted_only), Err(error.into()));
        // Variants the project chose are the case's own: the error says where they came from.
        let project = VariantChoice {
            project: chosen(&["scripted"]),
            run: None,
        };
        assert_eq!(
            runs(
                &format!("{base}expect: {{traced: [trace_error]}}\n"),
                &project
            ),
            Err(
                "case.yaml: expect.traced: `traced` is not among the case's variants (the \
                 project's `variants`: `scripted`)"
                    .into()
            )
        );
        assert_eq!(
            runs(&format!("{base}trace: {{strict: false}}\n"), &project),
            Err(
                "case.yaml: trace: no variant of the case traces (the project's `variants`: \
                 `scripted`) (add `traced` to `variants`, or drop `trace`)"
                    .into()
            )
        );
    }

    #[test]
    fn model_paths_stay_inside_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        for d in ["repo/.git", "repo/cases", "repo/models"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join("outside.py"), "").unwrap();
        std::fs::write(repo.join("models/m.py"), "").unwrap();
        let file = repo.join("cases/c.yaml");
        let case = |src: &str| {
            let text =
                format!("model: {{source: {src}, entry: M}}\ninputs: [{{name: x, shape: [2]}}]\n");
            Case::parse(&file, &text)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(case("../models/m.py"), Ok(()));
        let e = case("../../outside.py").unwrap_err();
        assert!(
            e.contains(": model.source: ../../outside.py resolves to "),
            "{e}"
        );
        assert!(
            e.ends_with("(model files must stay inside the repository, or under one of harness.toml's `roots`)"),
            "{e}"
        );
    }

    #[test]
    fn misspellings_get_a_suggestion() {
        assert_eq!(
            suggestion("unknown field `evals`, expected one of `source`, `import`, `entry`, `kwargs`, `eval`"),
            "; did you mean `eval`?"
        );
        assert_eq!(suggestion("unknown field `zzz`, expected `a` or `b`"), "");
        assert_eq!(suggestion("invalid type: map"), "");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 300, failure_persistence: None, ..Default::default() })]

        /// Whatever the text, parsing returns a case or an error, never a panic.
        #[test]
        fn parser_never_panics_on_any_text(text in "\\PC{0,300}") {
            let _ = Case::parse(Path::new("fuzz.yaml"), &text);
        }

        /// Small edits of a valid case (bytes replaced, removed or inserted) never panic either.
        #[test]
        fn parser_never_panics_on_edited_cases(
            edits in proptest::collection::vec((0usize..400, 0u8..128, 0u8..3), 1..10)
        ) {
            let mut bytes = GOOD.replace("MODEL", "m.py").into_bytes();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.insert(at, byte),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = Case::parse(Path::new("fuzz.yaml"), &text);
        }
    }

    #[test]
    fn non_utf8_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, b"model: \xff\xfe\n").unwrap();
        let e = Case::load(&bad).unwrap_err();
        assert!(e.message.contains("not UTF-8"), "{e}");
        let e = discover(&[dir.path().join("missing")]).unwrap_err();
        assert!(
            e.to_string().ends_with("no such case file or folder"),
            "{e}"
        );
        assert_eq!(discover(&[dir.path().to_path_buf()]).unwrap(), vec![bad]);
    }
}
