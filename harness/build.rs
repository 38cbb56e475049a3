//! Build script: stamps the build with a hash of what decides a result (`HARNESS_BUILD_ID`,
//! which keys the result cache): this crate's and the engine's sources, the worker package, the
//! pinned requirements and the report template; and embeds the worker package's files.
use std::path::Path;

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
