//! Build script: stamps the build with a hash of what decides a result (`HARNESS_BUILD_ID`,
//! which keys the result cache): this crate's and the engine's sources, the worker package, the
//! pinned requirements and the report template; embeds the worker package's files; and reads
//! the torch release the engine links (`HARNESS_TORCH_VERSION`), from the same place torch-sys
//! finds libtorch, so the core's checks, cache key and `harness setup` name the right torch.
use std::path::Path;
use std::process::Command;

#[allow(dead_code)]
#[path = "src/torch_lines.rs"]
mod torch_lines;

fn main() {
    // FNV-1a over the sorted paths and contents of everything that decides a result.
    let mut files = Vec::new();
    for dir in [
        "src",
        "python/harness_worker",
        "python/requirements.txt",
        "templates",
        "../engine/src",
    ] {
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
    embed_worker();
    let torch = torch_release();
    println!("cargo:rustc-env=HARNESS_TORCH_VERSION={torch}");
}

/// The torch release this build is for, found as torch-sys finds libtorch: with
/// `LIBTORCH_USE_PYTORCH`, the torch of the python on PATH (`python` in a virtualenv, else
/// `python3`); else `$LIBTORCH/build-version`; else (no torch to read: a build of the core
/// alone) the default line's, with a warning.
/// Panics, which stops the build with the message, for a torch no line supports.
fn torch_release() -> String {
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let found = if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        python_torch()
    } else {
        std::env::var_os("LIBTORCH")
            .and_then(|dir| std::fs::read_to_string(Path::new(&dir).join("build-version")).ok())
    };
    let Some(version) = found else {
        let line = torch_lines::LINES.last().expect("one line at least");
        println!(
            "cargo:warning=no torch found (neither LIBTORCH nor a python with torch on PATH): \
             the core assumes torch {}",
            line.release
        );
        return line.release.into();
    };
    match torch_lines::line_of_version(version.trim()) {
        Ok(line) => line.release.into(),
        Err(why) => panic!("{why}; choose another python (cargo xtask --torch X.Y does)"),
    }
}

/// `torch.__version__` of torch-sys's python, from its metadata (no `import torch`: 20 ms).
fn python_torch() -> Option<String> {
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let out = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('torch'))",
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `$OUT_DIR/worker_files.rs`: every `.py` file of the worker package, by name, compiled in.
fn embed_worker() {
    let dir = Path::new("python/harness_worker");
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.retain(|f| f.extension().is_some_and(|e| e == "py"));
    files.sort();
    let mut out = String::from("pub const WORKER_FILES: &[(&str, &str)] = &[\n");
    for f in &files {
        let name = f.strip_prefix(dir).expect("under the package").display();
        let abs = std::fs::canonicalize(f).expect("a listed file exists");
        out.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            name.to_string(),
            abs
        ));
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("worker_files.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        // Caches and the worker's own tests decide no result.
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" || name == "tests" {
            continue;
        }
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}
