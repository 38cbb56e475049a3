//! The settings shared by every case of a run, and their defaults.

use std::path::PathBuf;
use std::time::Duration;

use crate::case::{CheckSpec, DeviceChoice, VariantChoice};

/// How long a case may take when neither the command line nor the case says.
pub const DEFAULT_CASE_TIMEOUT: Duration = Duration::from_secs(300);
/// The element budget of one sample when neither the command line nor the case says: 2^24
/// elements (64 MiB of float32), since every sample of a case is kept in memory.
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 24;

/// Settings shared by every case of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Python interpreter with the torch this build links ([`crate::TORCH_VERSION`]).
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
    /// The project's device (for cases that name none) and the run's (`--device`, for every
    /// case).
    pub device: DeviceSetting,
}

/// Where cases run, as the project and the command line say; each case may name its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceSetting {
    pub project: Option<DeviceChoice>,
    pub run: Option<DeviceChoice>,
    /// Whether libtorch sees a usable GPU: known in `harness-run`, `None` in `harness` (no
    /// libtorch), which then cannot resolve `auto`.
    pub cuda: Option<bool>,
}

/// The device a case runs on, by name as torch spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDevice {
    Cpu,
    Cuda,
}

impl RunDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            RunDevice::Cpu => "cpu",
            RunDevice::Cuda => "cuda",
        }
    }
}

impl DeviceSetting {
    /// What the case asks for: `--device`, else its `check.device`, else the project's, else
    /// the CPU.
    pub fn choice(&self, check: &CheckSpec) -> DeviceChoice {
        self.run
            .or(check.device)
            .or(self.project)
            .unwrap_or_default()
    }

    /// The device the case runs on: `Ok(None)` when that is not known here (`auto` without
    /// libtorch); `Err` for CUDA where libtorch sees no GPU.
    pub fn resolve(&self, check: &CheckSpec) -> Result<Option<RunDevice>, String> {
        match (self.choice(check), self.cuda) {
            (DeviceChoice::Cpu, _) => Ok(Some(RunDevice::Cpu)),
            (DeviceChoice::Auto, Some(true)) | (DeviceChoice::Cuda, Some(true)) => {
                Ok(Some(RunDevice::Cuda))
            }
            (DeviceChoice::Auto, Some(false)) => Ok(Some(RunDevice::Cpu)),
            (DeviceChoice::Cuda, Some(false)) => Err(NO_CUDA.into()),
            (_, None) => Ok(None),
        }
    }
}

/// Why a case that asks for CUDA cannot run here.
pub const NO_CUDA: &str = "libtorch sees no CUDA device here (no GPU, no driver, or a CPU-only \
     torch): run with --device cpu, or --device auto to use a GPU only where there is one";

#[cfg(test)]
mod tests {
    use super::*;

    fn check(device: Option<DeviceChoice>) -> CheckSpec {
        CheckSpec {
            device,
            ..CheckSpec::default()
        }
    }

    #[test]
    fn the_command_line_wins_then_the_case_then_the_project() {
        let mut s = DeviceSetting {
            project: Some(DeviceChoice::Auto),
            run: None,
            cuda: Some(false),
        };
        assert_eq!(s.choice(&check(None)), DeviceChoice::Auto);
        assert_eq!(
            s.choice(&check(Some(DeviceChoice::Cuda))),
            DeviceChoice::Cuda
        );
        s.run = Some(DeviceChoice::Cpu);
        assert_eq!(
            s.choice(&check(Some(DeviceChoice::Cuda))),
            DeviceChoice::Cpu
        );
        assert_eq!(
            DeviceSetting::default().choice(&check(None)),
            DeviceChoice::Cpu
        );
    }

    #[test]
    fn auto_falls_back_to_the_cpu_and_cuda_without_a_gpu_is_an_error() {
        let on = |choice, cuda| {
            DeviceSetting {
                project: None,
                run: Some(choice),
                cuda,
            }
            .resolve(&check(None))
        };
        assert_eq!(
            on(DeviceChoice::Auto, Some(false)),
            Ok(Some(RunDevice::Cpu))
        );
        assert_eq!(
            on(DeviceChoice::Auto, Some(true)),
            Ok(Some(RunDevice::Cuda))
        );
        assert_eq!(
            on(DeviceChoice::Cuda, Some(false)),
            Err(NO_CUDA.to_string())
        );
        assert_eq!(
            on(DeviceChoice::Cuda, Some(true)),
            Ok(Some(RunDevice::Cuda))
        );
        // `harness` has no libtorch: only the CPU is known without asking it.
        assert_eq!(on(DeviceChoice::Cpu, None), Ok(Some(RunDevice::Cpu)));
        assert_eq!(on(DeviceChoice::Auto, None), Ok(None));
        assert_eq!(on(DeviceChoice::Cuda, None), Ok(None));
    }
}
