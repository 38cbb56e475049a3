//! Build script for the libtorch side, against the libtorch torch-sys found (its `lib/` is
//! `DEP_TCH_LIBTORCH_LIB`):
//! - puts that `lib/` on the rpath of every binary and test, so `harness-run` runs without
//!   `LD_LIBRARY_PATH`;
//! - links `harness-run` to `libtorch_cuda` when the torch has it: torch-sys asks for it under
//!   `--as-needed`, and since no symbol of it is referenced the linker drops it and CUDA is
//!   invisible (`tch::Cuda::is_available()` false on a GPU machine);
//! - records the torch release beside that `lib/` (`HARNESS_LIBTORCH_VERSION`, with its build
//!   tag) and whether CUDA is linked (`HARNESS_CUDA_LINKED`);
//! - compiles `csrc/numerics.cpp`, the ATen settings tch does not expose;
//! - says where `engine/` is (`HARNESS_ENGINE_DIR`): a torch line's workspace
//!   (`lines/torch-X.Y/`) builds these sources from elsewhere, and the tests find their fixtures
//!   through it.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    // torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=DIR`.
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys prints its libtorch lib dir"),
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let cuda = lib.join("libtorch_cuda.so").is_file();
    if cuda {
        for arg in [
            "-Wl,--no-as-needed".to_string(),
            format!("-L{}", lib.display()),
            "-ltorch_cuda".into(),
            "-Wl,--as-needed".into(),
        ] {
            println!("cargo:rustc-link-arg-bin=harness-run={arg}");
        }
    }
    println!("cargo:rustc-env=HARNESS_CUDA_LINKED={}", u8::from(cuda));
    println!(
        "cargo:rustc-env=HARNESS_LIBTORCH_VERSION={}",
        libtorch_version(&lib)
    );
    numerics(&lib);
}

/// `2.13.0+cu130`: `torch/version.py` beside the wheel's `lib/`, or a libtorch's `build-version`.
fn libtorch_version(lib: &Path) -> String {
    let root = lib.parent().expect("lib/ has a parent");
    if let Ok(v) = std::fs::read_to_string(root.join("build-version")) {
        return v.trim().to_string();
    }
    let py = std::fs::read_to_string(root.join("version.py")).unwrap_or_default();
    py.lines()
        .find_map(|l| l.strip_prefix("__version__"))
        .map(|v| {
            v.trim_start_matches([' ', '='])
                .trim_matches(['\'', '"', ' '])
        })
        .unwrap_or("unknown")
        .to_string()
}

/// `csrc/numerics.cpp`, compiled against the libtorch headers. The file is found from the
/// package's folder: `engine/` itself, or a torch line's `lines/torch-X.Y/` (its own workspace,
/// which builds `engine/`'s sources).
fn numerics(lib: &Path) {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let source = [dir.join("csrc"), dir.join("../../engine/csrc")]
        .into_iter()
        .map(|d| d.join("numerics.cpp"))
        .find(|f| f.is_file())
        .expect("engine/csrc/numerics.cpp");
    println!("cargo:rerun-if-changed={}", source.display());
    let engine = source
        .parent()
        .and_then(Path::parent)
        .and_then(|d| d.canonicalize().ok())
        .expect("engine/ exists");
    println!("cargo:rustc-env=HARNESS_ENGINE_DIR={}", engine.display());
    let include = lib.parent().expect("lib/ has a parent").join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .file(&source)
        .compile("harness_numerics");
}
