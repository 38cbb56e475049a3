//! The torch lines the harness builds against, one table: each torch release the engine can
//! link, the tch that wraps it, the torchvision made for it and how its engine is built. A
//! verdict is only worth what the libtorch that produced it is worth, so the engine is built for
//! exactly the torch in the Python environment it serves (the core's build script reads it; see
//! `harness/build.rs`), and `cargo xtask --torch X.Y` picks a line with its own venv and target
//! folder. This file has no dependencies: the core, its build script and xtask all include it.

/// One supported torch release and how the engine is built against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorchLine {
    /// `major.minor`, as `--torch` takes it.
    pub name: &'static str,
    /// The torch release (`torch==` pin); a local build tag (`+cu130`, `+cpu`) is allowed.
    pub release: &'static str,
    /// The tch (and torch-sys) release the engine links for it.
    pub tch: &'static str,
    /// The torchvision release built against it (the zoo's cases import torchvision).
    pub torchvision: &'static str,
    /// torch-sys checks for one torch release per tch; set when this line's tch expects
    /// another one whose generated op wrappers still all exist in this torch (measured: tch
    /// 0.26 builds and runs against torch 2.12.0, not against 2.11.0).
    pub bypass_version_check: bool,
    /// The engine's manifest for this line, relative to the repository root: the workspace's
    /// own `engine/Cargo.toml` when its tch fits, else a workspace of its own
    /// (`lines/torch-X.Y/Cargo.toml`: Cargo allows one `links = "tch"` per dependency graph).
    pub manifest: &'static str,
}

/// Every supported line, oldest first; the last is the default.
pub const LINES: &[TorchLine] = &[
    TorchLine {
        name: "2.11",
        release: "2.11.0",
        tch: "0.24.0",
        torchvision: "0.26.0",
        bypass_version_check: false,
        manifest: "lines/torch-2.11/Cargo.toml",
    },
    TorchLine {
        name: "2.12",
        release: "2.12.0",
        tch: "0.26.0",
        torchvision: "0.27.0",
        bypass_version_check: true,
        manifest: "engine/Cargo.toml",
    },
    TorchLine {
        name: "2.13",
        release: "2.13.0",
        tch: "0.26.0",
        torchvision: "0.28.0",
        bypass_version_check: false,
        manifest: "engine/Cargo.toml",
    },
];

/// The line a fresh checkout builds and tests.
pub const DEFAULT_LINE: &str = "2.13";

/// `2.13.0` for `2.13.0+cu130`: the release without its local build tag.
pub fn release_of(version: &str) -> &str {
    version.split('+').next().unwrap_or(version).trim()
}

/// `full` is `release`, with or without a local build tag (`2.13.0+cu130` is `2.13.0`); a
/// constant function, so the engine can check its libtorch at compile time.
pub const fn same_release(full: &str, release: &str) -> bool {
    let (f, r) = (full.as_bytes(), release.as_bytes());
    if f.len() < r.len() || (f.len() > r.len() && f[r.len()] != b'+') {
        return false;
    }
    let mut i = 0;
    while i < r.len() {
        if f[i] != r[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The line of a torch version as Python reports it (`2.12.0+cu130`), or why there is none.
pub fn line_of_version(version: &str) -> Result<&'static TorchLine, String> {
    let release = release_of(version);
    LINES.iter().find(|l| l.release == release).ok_or_else(|| {
        format!(
            "torch {version} is not supported: the harness builds against torch {}",
            supported()
        )
    })
}

/// The line `--torch` names (`2.12`, or a release such as `2.12.0`), or why there is none.
pub fn line_named(name: &str) -> Result<&'static TorchLine, String> {
    LINES
        .iter()
        .find(|l| l.name == name || l.release == release_of(name))
        .ok_or_else(|| {
            format!(
                "no torch line {name:?}: the supported lines are {}",
                supported()
            )
        })
}

/// `2.11.0, 2.12.0 and 2.13.0`.
pub fn supported() -> String {
    let releases: Vec<&str> = LINES.iter().map(|l| l.release).collect();
    match releases.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => releases.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_find_their_line_by_release() {
        assert_eq!(line_of_version("2.12.0+cu130").unwrap().tch, "0.26.0");
        assert_eq!(line_of_version("2.11.0").unwrap().tch, "0.24.0");
        assert_eq!(line_of_version("2.13.0+cpu").unwrap().name, "2.13");
        let err = line_of_version("2.10.0+cu128").unwrap_err();
        assert_eq!(
            err,
            "torch 2.10.0+cu128 is not supported: the harness builds against torch 2.11.0, \
             2.12.0 and 2.13.0"
        );
        assert!(
            line_of_version("2.13.1").is_err(),
            "a patch release is not assumed to fit"
        );
    }

    #[test]
    fn releases_compare_without_their_build_tag() {
        assert!(same_release("2.13.0+cu130", "2.13.0"));
        assert!(same_release("2.12.0", "2.12.0"));
        assert!(!same_release("2.13.0+cu130", "2.13.1"));
        assert!(!same_release("2.13.01", "2.13.0"));
        assert!(!same_release("2.1", "2.13.0"));
    }

    #[test]
    fn lines_are_named_by_minor_or_release() {
        assert_eq!(line_named("2.12").unwrap().release, "2.12.0");
        assert_eq!(line_named("2.11.0").unwrap().name, "2.11");
        assert!(line_named("2.9")
            .unwrap_err()
            .contains("2.11.0, 2.12.0 and 2.13.0"));
    }

    #[test]
    fn the_default_is_the_newest_line_and_builds_in_the_workspace() {
        let newest = LINES.last().unwrap();
        assert_eq!(newest.name, DEFAULT_LINE);
        assert_eq!(newest.manifest, "engine/Cargo.toml");
        assert!(!newest.bypass_version_check);
    }
}
