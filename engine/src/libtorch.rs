//! The libtorch this engine was built against and the process-wide settings it runs under: its
//! release (recorded in every result), whether CUDA is linked and usable, and the exact-numerics
//! settings a GPU run needs (TF32 off, cuDNN deterministic; set through `csrc/numerics.cpp`, as
//! tch does not expose them).

/// `2.13.0+cu130`: the torch release beside the libtorch this binary links, with its build tag.
pub const VERSION: &str = env!("HARNESS_LIBTORCH_VERSION");

/// Whether `harness-run` was linked to `libtorch_cuda` (the torch has it).
pub const CUDA_LINKED: bool = matches!(env!("HARNESS_CUDA_LINKED").as_bytes(), b"1");

// The core and the engine must be built for one torch: the core's checks, cache key and
// `harness setup` name `harness::TORCH_VERSION`, the variants run in this libtorch.
const _: () = assert!(
    harness::torch_lines::same_release(VERSION, harness::TORCH_VERSION),
    "the core was built for another torch than the libtorch the engine links: build both with \
     one Python environment (cargo xtask build --torch X.Y)"
);

extern "C" {
    fn harness_set_exact_numerics(exact: i32);
    fn harness_numerics_flags() -> i32;
}

/// ATen's numerics switches, as read back from its global context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    pub tf32_cublas: bool,
    pub tf32_cudnn: bool,
    pub cudnn_deterministic: bool,
    pub cudnn_benchmark: bool,
}

/// Turn TF32 off and make cuDNN deterministic (or restore libtorch's defaults but benchmarking):
/// the same settings the worker gives eager, so a GPU variant is judged against eager's own
/// numerics. Only flags are set: harmless without a GPU.
pub fn set_exact_numerics(exact: bool) {
    // SAFETY: sets flags of ATen's global context; no pointers cross.
    unsafe { harness_set_exact_numerics(i32::from(exact)) }
}

/// The switches as they are now.
pub fn numerics() -> Numerics {
    // SAFETY: reads flags of ATen's global context.
    let bits = unsafe { harness_numerics_flags() };
    Numerics {
        tf32_cublas: bits & 1 != 0,
        tf32_cudnn: bits & 2 != 0,
        cudnn_deterministic: bits & 4 != 0,
        cudnn_benchmark: bits & 8 != 0,
    }
}

/// CUDA can run variants here: linked, and a driver with a device present.
pub fn cuda_usable() -> bool {
    CUDA_LINKED && tch::Cuda::is_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_numerics_switch_tf32_off_and_cudnn_to_deterministic() {
        set_exact_numerics(true);
        let exact = numerics();
        set_exact_numerics(false);
        let loose = numerics();
        set_exact_numerics(true);
        assert_eq!(
            exact,
            Numerics {
                tf32_cublas: false,
                tf32_cudnn: false,
                cudnn_deterministic: true,
                cudnn_benchmark: false
            }
        );
        assert!(loose.tf32_cublas && loose.tf32_cudnn && !loose.cudnn_deterministic);
    }

    #[test]
    fn the_recorded_libtorch_is_the_cores_torch() {
        assert!(VERSION.starts_with(harness::TORCH_VERSION), "{VERSION}");
    }
}
