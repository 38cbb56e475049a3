//! Build script: puts libtorch's `lib/` (from the Python environment torch-sys linked against) on
//! the rpath of every binary and test of this package, so `target/*/harness` runs without
//! `LD_LIBRARY_PATH`; and stamps the build with a hash of the harness's own sources and worker
//! (`HARNESS_BUILD_ID`), which keys the result cache.
use std::path::Path;

fn main() {
    // torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=DIR`.
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");

    // FNV-1a over the sorted paths and contents of everything that decides a result.
    let mut files = Vec::new();
    for dir in ["src", "python", "templates"] {
        println!("cargo:rerun-if-changed={dir}");
        collect(Path::new(dir), &mut files);
    }
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        for b in f
            .to_string_lossy()
            .bytes()
            .chain(std::fs::read(f).unwrap_or_default())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!(
        "cargo:rustc-env=HARNESS_BUILD_ID={}-{h:016x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
