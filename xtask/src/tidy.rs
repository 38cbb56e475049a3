//! `cargo xtask tidy`: checks of the tree's own rules, as plain Rust over the repository's files.
//!
//! - **code map**: every path in ARCHITECTURE.md's code-map table exists (`{a,b}` alternations
//!   are expanded, `*`/`?`/`**` globs must match something, a trailing `/` must be a folder);
//! - **module docs**: every `.rs` file under `harness/src`, `engine/src` and `xtask/src` starts
//!   with a `//!` module doc;
//! - **spawners**: only the worker client spawns processes (no `Command::new`, `.spawn()`,
//!   `fork(` in the core or engine sources outside [`SPAWN_ALLOWED`]; [`EXEC_ONLY`] files may
//!   build a command only to `exec` it);
//! - **protocol lock**: the protocol version changes when the messages do: a hash of the Rust
//!   and Python protocol files is kept with the version in `xtask/protocol.lock`, rewritten by
//!   `cargo xtask tidy --bless`;
//! - **core without libtorch**: `cargo tree -p harness -e normal` has neither `tch` nor
//!   `torch-sys` (only here, not among the unit tests: it needs cargo to resolve);
//! - **torch lines**: each line's engine manifest pins its line's tch (`torch_lines.rs`), and a
//!   line built from a workspace of its own (`lines/torch-X.Y/Cargo.toml`) has exactly
//!   `engine/Cargo.toml`'s dependencies otherwise, so the lines build the same engine.
//!
//! Each check is a function over the files' text, unit-tested on bad input too; the first four
//! also run over the real tree as `#[test]`s, so `cargo test --workspace` enforces them.

use std::path::{Path, PathBuf};

use crate::env;

/// What one check found.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Passed; the line says what was checked.
    Ok(String),
    /// Failed; one line per problem.
    Failed(Vec<String>),
    /// Not run, and why (shown, never counted as a pass silently).
    Skipped(String),
}

pub fn run(args: &[String]) -> Result<u8, String> {
    let mut bless = false;
    for a in args {
        match a.as_str() {
            "--bless" => bless = true,
            other => return Err(format!("tidy: unknown argument {other:?} (only --bless)")),
        }
    }
    let root = env::root();
    let checks = [
        ("code map", code_map(&root)),
        ("module docs", module_docs(&root)),
        ("spawners", spawners(&root)),
        ("protocol lock", protocol_lock(&root, bless)),
        ("core without libtorch", core_without_libtorch()),
        ("torch lines", torch_lines(&root)),
    ];
    let mut failed = 0;
    for (name, outcome) in &checks {
        match outcome {
            Outcome::Ok(what) => println!("tidy: ok       {name}: {what}"),
            Outcome::Skipped(why) => println!("tidy: skipped  {name}: {why}"),
            Outcome::Failed(problems) => {
                failed += 1;
                println!("tidy: FAILED   {name}");
                for p in problems {
                    println!("    {p}");
                }
            }
        }
    }
    if failed > 0 {
        println!("tidy: {failed} of {} checks failed", checks.len());
        Ok(1)
    } else {
        Ok(0)
    }
}

fn outcome(problems: Vec<String>, ok: String) -> Outcome {
    if problems.is_empty() {
        Outcome::Ok(ok)
    } else {
        Outcome::Failed(problems)
    }
}

fn read(root: &Path, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: cannot read: {e}"))
}

// ---------------------------------------------------------------------------------------------
// code map

const ARCHITECTURE: &str = "ARCHITECTURE.md";

pub fn code_map(root: &Path) -> Outcome {
    let text = match read(root, ARCHITECTURE) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(vec![e]),
    };
    let entries = match code_map_paths(&text) {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(vec![format!("{ARCHITECTURE}: {e}")]),
    };
    let mut problems = Vec::new();
    for entry in &entries {
        for path in expand_braces(entry) {
            if !pattern_exists(root, &path) {
                let what = if path == *entry {
                    String::new()
                } else {
                    format!(" (from `{entry}`)")
                };
                problems.push(format!(
                    "{ARCHITECTURE}: the code map names `{path}`{what}, which does not exist"
                ));
            }
        }
    }
    outcome(problems, format!("{} paths exist", entries.len()))
}

/// The backticked paths in the first column of the table under `## Code map`.
pub fn code_map_paths(markdown: &str) -> Result<Vec<String>, String> {
    let mut in_section = false;
    let mut seen_section = false;
    let mut paths = Vec::new();
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            in_section = heading.trim().eq_ignore_ascii_case("code map");
            seen_section |= in_section;
            continue;
        }
        if !in_section || !line.trim_start().starts_with('|') {
            continue;
        }
        let first = first_cell(line.trim_start());
        paths.extend(backticked(first).into_iter().map(str::to_string));
    }
    if !seen_section {
        return Err("no `## Code map` section".into());
    }
    if paths.is_empty() {
        return Err("the code map has no backticked paths".into());
    }
    Ok(paths)
}

/// The first cell of a table row `| a | b |`, where `|` inside backticks does not split.
fn first_cell(row: &str) -> &str {
    let body = row.strip_prefix('|').unwrap_or(row);
    let mut in_code = false;
    for (i, c) in body.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '|' if !in_code => return &body[..i],
            _ => {}
        }
    }
    body
}

fn backticked(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `a/{b,c}.rs` → `a/b.rs`, `a/c.rs` (nested and repeated groups too).
pub fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in pattern[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else {
        return vec![pattern.to_string()];
    };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    bounds
        .windows(2)
        .flat_map(|w| expand_braces(&format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]])))
        .collect()
}

/// Does the path (maybe with `*`, `?`, `**`, or a trailing `/` for a folder) name something?
pub fn pattern_exists(root: &Path, pattern: &str) -> bool {
    let want_dir = pattern.ends_with('/');
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    matches_from(root, &parts, want_dir)
}

fn matches_from(dir: &Path, parts: &[&str], want_dir: bool) -> bool {
    let Some((&part, rest)) = parts.split_first() else {
        return if want_dir { dir.is_dir() } else { dir.exists() };
    };
    if part == "**" {
        if matches_from(dir, rest, want_dir) {
            return true;
        }
        return children(dir)
            .iter()
            .any(|c| c.is_dir() && matches_from(c, parts, want_dir));
    }
    if !part.contains(['*', '?']) {
        return matches_from(&dir.join(part), rest, want_dir);
    }
    children(dir).iter().any(|c| {
        c.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| wildcard(part, n))
            && matches_from(c, rest, want_dir)
    })
}

fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `*` and `?` within one path component.
fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

// ---------------------------------------------------------------------------------------------
// module docs

/// The source folders whose every `.rs` file needs a `//!` module doc (missing ones skipped).
const DOCUMENTED: &[&str] = &["harness/src", "engine/src", "xtask/src"];

pub fn module_docs(root: &Path) -> Outcome {
    let mut problems = Vec::new();
    let mut count = 0;
    for file in rust_files(root, DOCUMENTED) {
        count += 1;
        match read(root, &file) {
            Ok(text) if has_module_doc(&text) => {}
            Ok(_) => problems.push(format!(
                "{file}: does not start with a `//!` module doc (what the module is for)"
            )),
            Err(e) => problems.push(e),
        }
    }
    outcome(problems, format!("{count} files start with `//!`"))
}

/// Is the first non-empty line a `//!` comment?
pub fn has_module_doc(source: &str) -> bool {
    source
        .lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim_start().starts_with("//!"))
}

/// Every `.rs` file under the given folders (relative to `root`, `/`-separated, sorted).
fn rust_files(root: &Path, folders: &[&str]) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for c in children(dir) {
            if c.is_dir() {
                walk(&c, out);
            } else if c.extension().is_some_and(|e| e == "rs") {
                out.push(c);
            }
        }
    }
    let mut files = Vec::new();
    for folder in folders {
        walk(&root.join(folder), &mut files);
    }
    let mut rel: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(root).ok())
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .collect();
    rel.sort();
    rel
}

// ---------------------------------------------------------------------------------------------
// spawners

/// The folders where only the worker client may start processes.
const SPAWN_SCOPE: &[&str] = &["harness/src", "engine/src"];

/// Files (or folders, ending in `/`) that may spawn processes: the worker client, which owns
/// the fork servers, the probe server and their children.
pub const SPAWN_ALLOWED: &[&str] = &["harness/src/worker.rs", "harness/src/worker/"];

/// Files that may build a `Command` only to `exec` it (replacing the process, spawning
/// nothing): `cli.rs`'s `exec_run_binary`, where `harness` hands a run to `harness-run` with the
/// same arguments. Each `Command::new` there needs an `.exec()`, and `.spawn()`/`fork(` stay
/// forbidden.
pub const EXEC_ONLY: &[&str] = &["harness/src/cli.rs"];

const SPAWNS: &[&str] = &["Command::new", ".spawn()", "fork(", "libc::fork"];

fn listed(list: &[&str], file: &str) -> bool {
    list.iter().any(|entry| match entry.strip_suffix('/') {
        Some(dir) => file.starts_with(&format!("{dir}/")),
        None => file == *entry,
    })
}

pub fn spawners(root: &Path) -> Outcome {
    let mut problems = Vec::new();
    let files = rust_files(root, SPAWN_SCOPE);
    for file in &files {
        match read(root, file) {
            Ok(text) => problems.extend(spawn_violations(file, &text)),
            Err(e) => problems.push(e),
        }
    }
    outcome(
        problems,
        format!(
            "{} files, only {} spawn ({} only exec)",
            files.len(),
            SPAWN_ALLOWED.join(", "),
            EXEC_ONLY.join(", ")
        ),
    )
}

/// The lines of `file` (a path relative to the repository) that start processes where that is
/// not allowed. Comment lines are not code and are skipped.
pub fn spawn_violations(file: &str, source: &str) -> Vec<String> {
    if listed(SPAWN_ALLOWED, file) {
        return Vec::new();
    }
    let exec_only = listed(EXEC_ONLY, file);
    let mut problems = Vec::new();
    let mut commands = Vec::new();
    let mut execs = 0;
    for (i, line) in source.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        execs += code.matches(".exec()").count();
        for pattern in SPAWNS {
            for (at, _) in code.match_indices(pattern) {
                let before = &code[..at];
                let after = &code[at + pattern.len()..];
                let skip = match *pattern {
                    // `prefork(` and `do_fork(` are other functions; `libc::fork(` counts once.
                    "fork(" => {
                        before.ends_with(|c: char| c.is_alphanumeric() || c == '_')
                            || before.ends_with("libc::")
                    }
                    "libc::fork" => after.starts_with(|c: char| c.is_alphanumeric() || c == '_'),
                    _ => false,
                };
                if skip {
                    continue;
                }
                if exec_only && *pattern == "Command::new" {
                    commands.push(i + 1);
                    continue;
                }
                problems.push(format!(
                    "{file}:{}: `{pattern}`: only the worker client ({}) starts processes",
                    i + 1,
                    SPAWN_ALLOWED.join(", ")
                ));
            }
        }
    }
    if commands.len() > execs {
        let n = commands.len();
        for line in commands {
            problems.push(format!(
                "{file}:{line}: `Command::new` in a file that may only exec ({n} commands, \
                 {execs} `.exec()`): run it from the worker client instead"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// protocol lock

const LOCK: &str = "xtask/protocol.lock";
const RUST_PROTOCOL: &str = "harness/src/protocol.rs";
const PYTHON_PROTOCOL: &str = "harness/python/harness_worker/protocol.py";
/// The files whose text is the protocol: the Rust messages, then the Python ones (whichever of
/// the Python files exist).
const PROTOCOL_FILES: &[&str] = &[
    RUST_PROTOCOL,
    PYTHON_PROTOCOL,
    "harness/python/harness_worker/variants.py",
];

/// What `xtask/protocol.lock` records (and what the tree has now).
#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    pub version: u32,
    pub hash: u64,
}

impl Lock {
    pub fn parse(text: &str) -> Result<Lock, String> {
        let (mut version, mut hash) = (None, None);
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(' ') {
                Some(("version", v)) => {
                    version = Some(v.trim().parse().map_err(|_| format!("bad version {v:?}"))?)
                }
                Some(("hash", h)) => {
                    hash = Some(
                        u64::from_str_radix(h.trim(), 16).map_err(|_| format!("bad hash {h:?}"))?,
                    )
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        match (version, hash) {
            (Some(version), Some(hash)) => Ok(Lock { version, hash }),
            _ => Err("needs a `version N` and a `hash HEX` line".into()),
        }
    }

    pub fn render(&self) -> String {
        format!(
            "# The worker protocol's version and a hash of its message files ({}).\n\
             # Written by `cargo xtask tidy --bless`; checked by `cargo xtask tidy`.\n\
             version {}\nhash {:016x}\n",
            PROTOCOL_FILES.join(", "),
            self.version,
            self.hash
        )
    }
}

/// FNV-1a 64 over each file's path and its lines, whitespace-only lines left out (so blank
/// lines moving about do not count as a change).
pub fn protocol_hash(files: &[(&str, &str)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (path, text) in files {
        eat(path.as_bytes());
        eat(b"\n");
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            eat(line.trim_end_matches('\r').as_bytes());
            eat(b"\n");
        }
    }
    h
}

/// `pub const PROTOCOL_VERSION: u32 = N;`
pub fn rust_version(source: &str) -> Option<u32> {
    source.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("pub const PROTOCOL_VERSION: u32 =")?;
        rest.trim().strip_suffix(';')?.trim().parse().ok()
    })
}

/// A top-level `PROTOCOL = N` (or `PROTOCOL: int = N`, maybe with a comment).
pub fn python_version(source: &str) -> Option<u32> {
    source.lines().find_map(|l| {
        let rest = l.strip_prefix("PROTOCOL")?.trim_start();
        let rest = rest.strip_prefix(": int").unwrap_or(rest).trim_start();
        let value = rest.strip_prefix('=')?.split('#').next()?.trim();
        value.parse().ok()
    })
}

/// The check itself: `now` is the tree's version and hash, `python` the Python version.
pub fn judge_protocol(lock: Option<&Lock>, now: &Lock, python: u32) -> Result<String, String> {
    if now.version != python {
        return Err(format!(
            "PROTOCOL_VERSION is {} in {RUST_PROTOCOL} but PROTOCOL is {python} in \
             {PYTHON_PROTOCOL}: they must be equal",
            now.version
        ));
    }
    let Some(lock) = lock else {
        return Err(format!(
            "{LOCK} does not exist: run `cargo xtask tidy --bless` to record version {}",
            now.version
        ));
    };
    if lock.hash != now.hash && lock.version == now.version {
        return Err(
            "the protocol messages changed: bump PROTOCOL_VERSION (Rust) and PROTOCOL (Python) \
             and run `cargo xtask tidy --bless`"
                .into(),
        );
    }
    if lock != now {
        return Err(format!(
            "{LOCK} records version {} (hash {:016x}), the tree has version {} (hash {:016x}): \
             run `cargo xtask tidy --bless` to record it",
            lock.version, lock.hash, now.version, now.hash
        ));
    }
    Ok(format!("version {}, hash {:016x}", now.version, now.hash))
}

pub fn protocol_lock(root: &Path, bless: bool) -> Outcome {
    for required in [RUST_PROTOCOL, PYTHON_PROTOCOL] {
        if !root.join(required).is_file() {
            return Outcome::Skipped(format!("{required} does not exist yet"));
        }
    }
    let mut texts = Vec::new();
    for file in PROTOCOL_FILES {
        if root.join(file).is_file() {
            match read(root, file) {
                Ok(t) => texts.push((*file, t)),
                Err(e) => return Outcome::Failed(vec![e]),
            }
        }
    }
    let text_of = |name: &str| {
        texts
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, t)| t.as_str())
            .unwrap_or_default()
    };
    let Some(version) = rust_version(text_of(RUST_PROTOCOL)) else {
        return Outcome::Failed(vec![format!(
            "{RUST_PROTOCOL}: no `pub const PROTOCOL_VERSION: u32 = N;`"
        )]);
    };
    let Some(python) = python_version(text_of(PYTHON_PROTOCOL)) else {
        return Outcome::Failed(vec![format!(
            "{PYTHON_PROTOCOL}: no top-level `PROTOCOL = N`"
        )]);
    };
    let files: Vec<(&str, &str)> = texts.iter().map(|(f, t)| (*f, t.as_str())).collect();
    let now = Lock {
        version,
        hash: protocol_hash(&files),
    };
    let lock = match std::fs::read_to_string(root.join(LOCK)) {
        Ok(text) => match Lock::parse(&text) {
            Ok(l) => Some(l),
            Err(e) if bless => {
                eprintln!("tidy: {LOCK} is unreadable ({e}); rewriting it");
                None
            }
            Err(e) => return Outcome::Failed(vec![format!("{LOCK}: {e}")]),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Outcome::Failed(vec![format!("{LOCK}: cannot read: {e}")]),
    };
    if !bless {
        return match judge_protocol(lock.as_ref(), &now, python) {
            Ok(ok) => Outcome::Ok(ok),
            Err(e) => Outcome::Failed(vec![e]),
        };
    }
    if version != python {
        // Blessing cannot fix this one; say so rather than record a lock that will not pass.
        return Outcome::Failed(vec![judge_protocol(None, &now, python).unwrap_err()]);
    }
    if let Some(old) = &lock {
        if old.hash != now.hash && old.version == now.version {
            eprintln!(
                "tidy: note: the protocol files changed but the version is still {version}; \
                 recorded anyway (right only if no message changed: comments, names)"
            );
        }
    }
    match std::fs::write(root.join(LOCK), now.render()) {
        Ok(()) => Outcome::Ok(format!(
            "blessed: {LOCK} records version {version}, hash {:016x}",
            now.hash
        )),
        Err(e) => Outcome::Failed(vec![format!("{LOCK}: cannot write: {e}")]),
    }
}

// ---------------------------------------------------------------------------------------------
// core without libtorch

/// Every line's manifest against `engine/Cargo.toml` (see the module doc).
pub fn torch_lines(root: &Path) -> Outcome {
    let mut problems = Vec::new();
    let engine = match read(root, "engine/Cargo.toml") {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(vec![e]),
    };
    for line in env::torch_lines::LINES {
        let text = match read(root, line.manifest) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for krate in ["tch", "torch-sys"] {
            let pin = format!("{krate} = \"={}\"", line.tch);
            if !text.lines().any(|l| l.trim() == pin) {
                problems.push(format!(
                    "{}: torch {} needs `{pin}`",
                    line.manifest, line.release
                ));
            }
        }
        let unpinned = |t: &str| dependency_lines(t, &["tch", "torch-sys"]);
        if line.manifest != "engine/Cargo.toml" && unpinned(&text) != unpinned(&engine) {
            problems.push(format!(
                "{}: its dependencies differ from engine/Cargo.toml's (beyond tch and torch-sys)",
                line.manifest
            ));
        }
    }
    let n = env::torch_lines::LINES.len();
    outcome(problems, format!("{n} lines, each manifest pins its tch"))
}

/// The dependency tables' entries (`[dependencies]`, `[build-dependencies]`,
/// `[dev-dependencies]`), comments and blank lines dropped, without the crates `except`; a path
/// dependency by its folder's name (the manifests live at different depths).
fn dependency_lines(manifest: &str, except: &[&str]) -> Vec<String> {
    let mut in_deps = false;
    let mut out = Vec::new();
    for l in manifest.lines().map(str::trim) {
        if l.starts_with('[') {
            in_deps = l.ends_with("dependencies]");
            if in_deps {
                out.push(l.to_string());
            }
            continue;
        }
        let name = l.split('=').next().unwrap_or_default().trim();
        if in_deps && !l.is_empty() && !l.starts_with('#') && !except.contains(&name) {
            out.push(match l.split_once("path = \"") {
                Some((head, rest)) => {
                    let (path, tail) = rest.split_once('"').unwrap_or((rest, ""));
                    let folder = path.rsplit('/').next().unwrap_or(path);
                    format!("{head}path = \"{folder}\"{tail}")
                }
                None => l.to_string(),
            });
        }
    }
    out
}

/// Crates that are libtorch, by their `cargo tree --prefix none` line.
const LIBTORCH_CRATES: &[&str] = &["tch", "torch-sys"];

pub fn core_without_libtorch() -> Outcome {
    let env = match env::Env::prepare() {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(vec![format!("cannot set up the environment: {e}")]),
    };
    let args = ["tree", "-p", "harness", "-e", "normal", "--prefix", "none"];
    let output = match env.cargo_command(&args).output() {
        Ok(o) => o,
        Err(e) => return Outcome::Failed(vec![format!("cannot run cargo tree: {e}")]),
    };
    if !output.status.success() {
        return Outcome::Failed(vec![format!(
            "`cargo {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )]);
    }
    let tree = String::from_utf8_lossy(&output.stdout);
    let found = libtorch_lines(&tree);
    let problems = found
        .iter()
        .map(|line| {
            format!(
                "the core crate `harness` depends on libtorch: `{line}` is in `cargo tree -p \
                 harness -e normal` (libtorch belongs in `harness-engine`)"
            )
        })
        .collect();
    outcome(
        problems,
        format!(
            "`cargo tree -p harness -e normal` has none of {}",
            LIBTORCH_CRATES.join(", ")
        ),
    )
}

/// The lines of `cargo tree --prefix none` output that are libtorch crates (each once).
pub fn libtorch_lines(tree: &str) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .map(str::trim)
        .filter(|l| {
            LIBTORCH_CRATES
                .iter()
                .any(|c| l.strip_prefix(c).is_some_and(|r| r.starts_with(' ')))
        })
        .map(|l| l.trim_end_matches(" (*)").to_string())
        .collect();
    found.sort();
    found.dedup();
    found
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    #[test]
    fn every_torch_line_builds_the_same_engine() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(
            matches!(torch_lines(root), Outcome::Ok(_)),
            "{:?}",
            torch_lines(root)
        );
        let engine =
            "[package]\nname = \"e\"\n[dependencies]\n# c\ntch = \"=0.26.0\"\nserde = \"1\"\n";
        let other = engine.replace("0.26.0", "0.24.0");
        assert_eq!(
            dependency_lines(engine, &["tch"]),
            dependency_lines(&other, &["tch"])
        );
        let more = format!("{other}regex = \"1\"\n");
        assert_ne!(
            dependency_lines(engine, &["tch"]),
            dependency_lines(&more, &["tch"])
        );
    }

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-tidy-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn expect_ok(outcome: Outcome) {
        match outcome {
            Outcome::Ok(what) => eprintln!("ok: {what}"),
            Outcome::Skipped(why) => eprintln!("skipped: {why}"),
            Outcome::Failed(problems) => panic!("\n{}\n", problems.join("\n")),
        }
    }

    // The real tree: these are the checks `cargo xtask tidy` runs.

    #[test]
    fn the_code_map_names_only_existing_paths() {
        expect_ok(code_map(&env::root()));
    }

    #[test]
    fn every_source_file_has_a_module_doc() {
        expect_ok(module_docs(&env::root()));
    }

    #[test]
    fn only_the_worker_client_spawns_processes() {
        expect_ok(spawners(&env::root()));
    }

    #[test]
    fn the_protocol_lock_is_current() {
        expect_ok(protocol_lock(&env::root(), false));
    }

    // The checks on made-up input, bad input included.

    #[test]
    fn code_map_paths_come_from_the_first_column_of_the_code_map_only() {
        let md =
            "# A\n\n| `not/this.rs` | elsewhere |\n\n## Code map\n\n| path | what |\n|---|---|\n\
                  | `a/b.rs` | x `c.rs` |\n| `xtask/` | `cargo xtask verify|test` |\n\
                  | `{p,q}.rs`, `r/` | two |\n\n## Invariants\n\n| `nor/this` | x |\n";
        assert_eq!(
            code_map_paths(md).unwrap(),
            ["a/b.rs", "xtask/", "{p,q}.rs", "r/"]
        );
        assert!(code_map_paths("# A\n| `a` | b |\n").is_err());
        assert!(code_map_paths("## Code map\n| path | what |\n").is_err());
    }

    #[test]
    fn braces_expand() {
        assert_eq!(expand_braces("a/b.rs"), ["a/b.rs"]);
        assert_eq!(expand_braces("a/{b,c}.rs"), ["a/b.rs", "a/c.rs"]);
        assert_eq!(expand_braces("{x,y}/{1,2}"), ["x/1", "x/2", "y/1", "y/2"]);
        assert_eq!(expand_braces("a{b,{c,d}}"), ["ab", "ac", "ad"]);
        assert_eq!(expand_braces("a{b"), ["a{b"]);
    }

    #[test]
    fn wildcards_match_one_component() {
        assert!(wildcard("*.rs", "main.rs"));
        assert!(wildcard("m?in.rs", "main.rs"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("*.rs", "main.py"));
        assert!(!wildcard("?", ""));
        assert!(wildcard("a*b*c", "aXbYbc"));
    }

    #[test]
    fn code_map_paths_are_checked_against_the_tree() {
        let root = scratch("code-map");
        std::fs::create_dir_all(root.join("src/report")).unwrap();
        std::fs::write(root.join("src/main.rs"), "").unwrap();
        std::fs::write(root.join("src/report/mod.rs"), "").unwrap();
        assert!(pattern_exists(&root, "src/main.rs"));
        assert!(pattern_exists(&root, "src/"));
        assert!(pattern_exists(&root, "src/*.rs"));
        assert!(pattern_exists(&root, "src/**/mod.rs"));
        assert!(pattern_exists(&root, "**/main.rs"));
        assert!(
            !pattern_exists(&root, "src/main.rs/"),
            "a file is not a folder"
        );
        assert!(!pattern_exists(&root, "src/*.py"));
        assert!(!pattern_exists(&root, "src/gone.rs"));
        let md = "## Code map\n| `src/{main,lib}.rs` | x |\n| `src/report/` | y |\n";
        std::fs::write(root.join(ARCHITECTURE), md).unwrap();
        match code_map(&root) {
            Outcome::Failed(p) => {
                assert_eq!(p.len(), 1, "{p:?}");
                assert!(
                    p[0].contains("`src/lib.rs` (from `src/{main,lib}.rs`)"),
                    "{p:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(root.join("src/lib.rs"), "").unwrap();
        assert!(matches!(code_map(&root), Outcome::Ok(_)));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_module_doc_is_the_first_non_empty_line() {
        assert!(has_module_doc("//! What this is.\nuse x;\n"));
        assert!(has_module_doc("\n\n  //! Indented.\n"));
        assert!(!has_module_doc("use x;\n//! Too late.\n"));
        assert!(!has_module_doc("/// An item doc.\nfn f() {}\n"));
        assert!(!has_module_doc("// A plain comment.\n"));
        assert!(!has_module_doc(""));
    }

    #[test]
    fn module_docs_are_checked_in_every_source_folder() {
        let root = scratch("docs");
        std::fs::create_dir_all(root.join("harness/src/report")).unwrap();
        std::fs::write(root.join("harness/src/lib.rs"), "//! Fine.\n").unwrap();
        std::fs::write(root.join("harness/src/report/mod.rs"), "use x;\n").unwrap();
        std::fs::write(root.join("harness/src/notes.txt"), "not rust\n").unwrap();
        match module_docs(&root) {
            Outcome::Failed(p) => {
                assert_eq!(p.len(), 1, "{p:?}");
                assert!(p[0].starts_with("harness/src/report/mod.rs:"), "{p:?}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_the_worker_client_may_spawn() {
        let spawn = "fn f() {\n    let c = std::process::Command::new(\"python\").spawn();\n}\n";
        let bad = spawn_violations("harness/src/run.rs", spawn);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].starts_with("harness/src/run.rs:2: `Command::new`"),
            "{bad:?}"
        );
        assert!(spawn_violations("harness/src/worker.rs", spawn).is_empty());
        assert!(spawn_violations("harness/src/worker/fork.rs", spawn).is_empty());
        assert!(!spawn_violations("harness/src/worker_extra.rs", spawn).is_empty());
        assert_eq!(
            spawn_violations("engine/src/run.rs", "unsafe { libc::fork() };\n").len(),
            1
        );
        assert_eq!(
            spawn_violations("engine/src/run.rs", "use libc::fork;\n").len(),
            1
        );
        assert_eq!(
            spawn_violations("engine/src/run.rs", "nix::unistd::fork()\n").len(),
            1
        );
        assert!(spawn_violations("engine/src/run.rs", "prefork(); do_fork(x);\n").is_empty());
        assert!(spawn_violations("engine/src/run.rs", "std::thread::spawn(|| 1);\n").is_empty());
        assert!(spawn_violations("engine/src/run.rs", "/// `Command::new` in a doc\n").is_empty());
    }

    #[test]
    fn the_exec_only_file_may_exec_but_not_spawn() {
        let exec = "let err = std::process::Command::new(&run)\n    .args(a)\n    .exec();\n";
        assert!(spawn_violations("harness/src/cli.rs", exec).is_empty());
        let spawn = "let c = Command::new(&run).args(a).status();\n";
        let bad = spawn_violations("harness/src/cli.rs", spawn);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("may only exec"), "{bad:?}");
        let both = format!("{exec}let c = Command::new(&run).spawn();\n");
        assert_eq!(spawn_violations("harness/src/cli.rs", &both).len(), 3);
        assert_eq!(spawn_violations("harness/src/main.rs", exec).len(), 1);
    }

    #[test]
    fn protocol_versions_are_read_from_both_languages() {
        let rust = "//! Doc.\n/// The version.\npub const PROTOCOL_VERSION: u32 = 3;\n";
        assert_eq!(rust_version(rust), Some(3));
        assert_eq!(rust_version("pub const PROTOCOL: u32 = 3;\n"), None);
        assert_eq!(
            python_version("\"\"\"Doc.\"\"\"\nPROTOCOL = 3  # bump me\n"),
            Some(3)
        );
        assert_eq!(python_version("PROTOCOL: int = 4\n"), Some(4));
        assert_eq!(
            python_version("class E:\n    PROTOCOL = \"protocol\"\n"),
            None
        );
        assert_eq!(python_version("PROTOCOL_NAME = 5\n"), None);
    }

    #[test]
    fn the_protocol_hash_ignores_blank_lines_only() {
        let h = |rs: &str, py: &str| protocol_hash(&[("a.rs", rs), ("b.py", py)]);
        let base = h("struct A;\nstruct B;\n", "X = 1\n");
        assert_eq!(base, h("struct A;\n\n   \nstruct B;\n", "X = 1\n\n"));
        assert_eq!(base, h("struct A;\r\nstruct B;\r\n", "X = 1\n"));
        assert_ne!(base, h("struct A;\nstruct C;\n", "X = 1\n"));
        assert_ne!(base, h("struct A;\n    struct B;\n", "X = 1\n"));
        assert_ne!(base, h("struct A;\nstruct B;\n", "X = 2\n"));
        assert_ne!(base, protocol_hash(&[("a.rs", "struct A;\nstruct B;\n")]));
    }

    #[test]
    fn the_lock_round_trips() {
        let lock = Lock {
            version: 7,
            hash: 0x00ab_cdef_0123_4567,
        };
        assert_eq!(Lock::parse(&lock.render()).unwrap(), lock);
        assert!(Lock::parse("version 1\n").is_err());
        assert!(Lock::parse("version x\nhash 12\n").is_err());
        assert!(Lock::parse("version 1\nhash 12\nextra\n").is_err());
    }

    #[test]
    fn changed_messages_need_a_version_bump() {
        let lock = Lock {
            version: 2,
            hash: 1,
        };
        assert!(judge_protocol(Some(&lock), &lock.clone(), 2).is_ok());
        let changed = Lock {
            version: 2,
            hash: 9,
        };
        let e = judge_protocol(Some(&lock), &changed, 2).unwrap_err();
        assert!(
            e.starts_with("the protocol messages changed: bump PROTOCOL_VERSION"),
            "{e}"
        );
        let bumped = Lock {
            version: 3,
            hash: 9,
        };
        let e = judge_protocol(Some(&lock), &bumped, 3).unwrap_err();
        assert!(e.contains("--bless"), "an unrecorded bump still fails: {e}");
        let e = judge_protocol(Some(&lock), &lock.clone(), 3).unwrap_err();
        assert!(e.contains("must be equal"), "{e}");
        assert!(judge_protocol(None, &lock, 2)
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn the_protocol_check_skips_visibly_blesses_and_then_catches_a_change() {
        let root = scratch("protocol");
        assert!(matches!(protocol_lock(&root, false), Outcome::Skipped(_)));
        std::fs::create_dir_all(root.join("harness/src")).unwrap();
        std::fs::create_dir_all(root.join("harness/python/harness_worker")).unwrap();
        std::fs::create_dir_all(root.join("xtask")).unwrap();
        let rs = root.join(RUST_PROTOCOL);
        let py = root.join(PYTHON_PROTOCOL);
        std::fs::write(&rs, "pub const PROTOCOL_VERSION: u32 = 1;\nstruct Hello;\n").unwrap();
        assert!(matches!(protocol_lock(&root, false), Outcome::Skipped(_)));
        std::fs::write(&py, "PROTOCOL = 1\n").unwrap();
        assert!(
            matches!(protocol_lock(&root, false), Outcome::Failed(_)),
            "no lock yet"
        );
        assert!(matches!(protocol_lock(&root, true), Outcome::Ok(_)));
        assert!(matches!(protocol_lock(&root, false), Outcome::Ok(_)));
        std::fs::write(&rs, "pub const PROTOCOL_VERSION: u32 = 1;\nstruct Hi;\n").unwrap();
        match protocol_lock(&root, false) {
            Outcome::Failed(p) => assert!(p[0].contains("bump PROTOCOL_VERSION"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(&rs, "pub const PROTOCOL_VERSION: u32 = 2;\nstruct Hi;\n").unwrap();
        match protocol_lock(&root, true) {
            Outcome::Failed(p) => assert!(p[0].contains("must be equal"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        std::fs::write(&py, "PROTOCOL = 2\n").unwrap();
        assert!(matches!(protocol_lock(&root, false), Outcome::Failed(_)));
        assert!(matches!(protocol_lock(&root, true), Outcome::Ok(_)));
        assert!(matches!(protocol_lock(&root, false), Outcome::Ok(_)));
        // A new Python protocol file is part of the protocol.
        std::fs::write(root.join(PROTOCOL_FILES[2]), "VARIANTS = ()\n").unwrap();
        assert!(matches!(protocol_lock(&root, false), Outcome::Failed(_)));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn libtorch_is_found_in_cargo_tree_output() {
        let tree = "harness v0.1.0 (/w/harness)\nanyhow v1.0.98\ntch v0.26.0\n\
                    torch-sys v0.26.0\ntch v0.26.0 (*)\ntch-extra v1.0.0\nserde v1.0.0\n";
        assert_eq!(libtorch_lines(tree), ["tch v0.26.0", "torch-sys v0.26.0"]);
        assert!(libtorch_lines("harness v0.1.0 (/w/harness)\nserde v1.0.0\n").is_empty());
    }
}
