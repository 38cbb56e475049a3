//! The settings shared by every case of a run, and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::case::VariantChoice;

/// How long a case may take when neither the command line nor the case says.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(300);
/// The element budget of one sample when neither the command line nor the case says: 2^24
/// elements (64 MiB of float32), since every sample of a case is kept in memory.
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 24;

/// Settings shared by every case of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Python interpreter with torch 2.13.0.
    pub python: PathBuf,
    /// Where artifacts go (`<out>/artifacts/<case>/traced.pt`, `<out>/counterexamples/`).
    pub out_dir: PathBuf,
    /// Overrides every case's `check.seed`.
    pub seed: Option<u64>,
    /// How long one case may take (overrides `check.timeout_s`; default [`DEFAULT_CASE_TIMEOUT`]).
    pub timeout: Option<Duration>,
    /// Most elements one sample may hold (overrides `check.max_elements`; default
    /// [`DEFAULT_MAX_ELEMENTS`]).
    pub max_elements: Option<u64>,
    /// Check only the trace input and this saved input (a counterexample), not the plan.
    pub replay: Option<PathBuf>,
    /// Intra-op threads for the worker's torch (`None`: torch's default); set when several
    /// cases run at once, so they share the cores instead of oversubscribing them.
    pub torch_threads: Option<usize>,
    /// Folders on the worker's `sys.path` (the project's import roots); model files may also
    /// live under them.
    pub python_path: Vec<PathBuf>,
    /// The project's variants (for cases that list none) and the run's (`--variants`, for
    /// every case).
    pub variants: VariantChoice,
}
