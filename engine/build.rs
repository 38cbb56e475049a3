//! Build script: puts libtorch's `lib/` (from the Python environment torch-sys linked against) on
//! the rpath of every binary and test of this package, so `target/*/harness-run` runs without
//! `LD_LIBRARY_PATH`.

fn main() {
    // torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=DIR`.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
