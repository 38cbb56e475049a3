//! The Python worker client: the only module that spawns processes.
//!
//! One worker process serves many requests: line-delimited JSON on its stdin and on its
//! protocol channel (its stdout; the worker moves user prints to stderr, and lines that are not
//! replies are skipped anyway). The first exchange is a protocol-version handshake. The worker's
//! stderr is drained by a thread into a bounded tail that error messages quote. Dropping a
//! [`Worker`] kills and reaps the process. A worker is a fork server the harness spawned, or the
//! probe server one of those forked ([`Worker::probe_server`]), reached through three FIFOs and
//! known only by its pid.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value as Json;

pub use crate::protocol::*;

// `WORKER_FILES`: the worker package's files by name (see build.rs).
include!(concat!(env!("OUT_DIR"), "/worker_files.rs"));

/// The worker package's name: its files go to `<dir>/harness_worker/`, run as `python -m`.
pub const WORKER_PACKAGE: &str = "harness_worker";
const STDERR_TAIL_LINES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot start the Python worker with {python}: {source}")]
    Spawn {
        python: PathBuf,
        source: std::io::Error,
    },
    #[error("the Python worker {status}{}", tail_text(.stderr_tail))]
    Died {
        status: String,
        stderr_tail: Vec<String>,
    },
    #[error("the Python worker did not answer `{op}` within {seconds:.0} s")]
    Timeout { op: String, seconds: f64 },
    /// The case's child process died; the server is fine.
    #[error("the case's worker process {status}{}", tail_text(.stderr_tail))]
    CaseDied {
        status: String,
        stderr_tail: Vec<String>,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("protocol error with the Python worker: {0}")]
    Protocol(String),
    /// The interpreter's torch is not the one the artifacts run in.
    #[error(
        "{python} has torch {found}, but this harness runs the artifacts in libtorch {wanted} \
         (the artifact format and the op set are tied to it): install torch=={wanted} into that \
         environment (`harness setup` does), or point --python, HARNESS_PYTHON or harness.toml's \
         `python`/`venv` at one that has it"
    )]
    TorchVersion {
        python: PathBuf,
        found: String,
        wanted: &'static str,
    },
    /// The worker answered, with an error of a kind it names (model_import, ...).
    #[error("{}", .0.message)]
    Reply(ErrorBody),
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n  {}", tail.join("\n  "))
    }
}

pub use crate::error::{ErrorBody, ErrorKind};

/// How the harness holds a server process.
enum Server {
    /// Spawned by the harness, which waits for it.
    Spawned(Child),
    /// Forked by a spawned server (the probe server): known by its pid, reaped by its parent.
    Forked(u32),
}

pub struct Worker {
    server: Server,
    /// The forked child serving the current case, if one is running.
    case_pid: Option<u32>,
    stdin: Box<dyn Write + Send>,
    replies: Receiver<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    next_id: u64,
    /// A `hello` sent and not yet answered (the probe server answers once it is warm).
    pending_hello: Option<u64>,
    pub hello: Hello,
    /// The worker's script (spawned) or its FIFOs (forked).
    _dir: tempfile::TempDir,
}

/// Drain `source` (opened by `open`, in the thread: a FIFO's open waits for its writer) line by
/// line into the returned channel.
fn line_channel<R: Read + Send + 'static>(
    open: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let Ok(source) = open() else { return };
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Keep the last lines of `source` (the worker's stderr) in a bounded tail.
fn stderr_tail<R: Read + Send + 'static>(
    open: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> Arc<Mutex<VecDeque<String>>> {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let lines = line_channel(open);
    let sink = Arc::clone(&tail);
    thread::spawn(move || {
        for line in lines {
            let mut tail = sink.lock().unwrap_or_else(|e| e.into_inner());
            if tail.len() == STDERR_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
    tail
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Is the process running (not gone, not a zombie waiting for its parent)?
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

/// Write the worker package under `dir` (as `dir/harness_worker/*.py`).
fn write_package(dir: &Path) -> std::io::Result<()> {
    let package = dir.join(WORKER_PACKAGE);
    for (name, text) in WORKER_FILES {
        let path = package.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// `PYTHONPATH` with the package's folder first, then the project's import roots, then the
/// user's own entries.
fn python_path(dir: &Path, roots: &[PathBuf]) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(
        roots
            .iter()
            .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone())),
    );
    if let Some(user) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&user));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}

/// Whether a Python torch version (`2.13.0+cpu`) is the release `wanted` (`2.13.0`): the local
/// build tag (CPU, CUDA flavour) does not change the artifact format or the op set.
pub fn same_torch(found: &str, wanted: &str) -> bool {
    crate::torch_lines::same_release(found, wanted)
}

impl Worker {
    /// Start a worker with this Python interpreter and check the protocol version. With
    /// `warm_export`, its fork server also pays torch.export's first-use cost (about 2 s of
    /// imports) once, for every child to inherit.
    pub fn spawn(
        python: &Path,
        threads: Option<usize>,
        roots: &[PathBuf],
        warm_export: bool,
    ) -> Result<Worker, WorkerError> {
        let script_dir = tempfile::Builder::new()
            .prefix("harness-worker-")
            .tempdir()
            .map_err(|source| WorkerError::Spawn {
                python: python.into(),
                source,
            })?;
        write_package(script_dir.path()).map_err(|source| WorkerError::Spawn {
            python: python.into(),
            source,
        })?;
        let mut cmd = Command::new(python);
        if let Some(n) = threads {
            cmd.env("OMP_NUM_THREADS", n.to_string())
                .env("MKL_NUM_THREADS", n.to_string());
        }
        let mut child = cmd
            .args(["-u", "-m", WORKER_PACKAGE])
            .env("PYTHONPATH", python_path(script_dir.path(), roots))
            .env("PYTHONWARNINGS", "ignore::DeprecationWarning")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("HARNESS_WARM_EXPORT", if warm_export { "1" } else { "" })
            // AOTInductor compiles in the case's child, a fork: no pool of compile workers.
            .env("TORCHINDUCTOR_COMPILE_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches the harness, which ends the
            // worker itself (see `interrupt`).
            .process_group(0)
            .spawn()
            .map_err(|source| WorkerError::Spawn {
                python: python.into(),
                source,
            })?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut worker = Worker {
            server: Server::Spawned(child),
            case_pid: None,
            stdin: Box::new(stdin),
            replies: line_channel(move || Ok(stdout)),
            stderr_tail: stderr_tail(move || Ok(stderr)),
            next_id: 0,
            pending_hello: None,
            hello: Hello {
                protocol: 0,
                torch: String::new(),
                python: String::new(),
                pid: 0,
                site: Vec::new(),
            },
            _dir: script_dir,
        };
        worker.pending_hello = Some(worker.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
        })?);
        worker.wait_hello()?;
        if !same_torch(&worker.hello.torch, crate::TORCH_VERSION) {
            return Err(WorkerError::TorchVersion {
                python: python.into(),
                found: worker.hello.torch.clone(),
                wanted: crate::TORCH_VERSION,
            });
        }
        Ok(worker)
    }

    /// Take the answer to the `hello` sent at start, once: the protocol must match.
    fn wait_hello(&mut self) -> Result<(), WorkerError> {
        let Some(id) = self.pending_hello.take() else {
            return Ok(());
        };
        // Importing torch takes a few seconds on a cold disk.
        let hello: Hello = self.receive(id, "hello", Duration::from_secs(300))?;
        if hello.protocol != PROTOCOL_VERSION {
            return Err(WorkerError::Protocol(format!(
                "the worker speaks protocol {}, the harness {PROTOCOL_VERSION}",
                hello.protocol
            )));
        }
        self.hello = hello;
        Ok(())
    }

    /// Fork the probe server from this (idle) fork server: a second fork server that warms the
    /// meta device's kernels and serves device probes, reached through FIFOs in a folder of its
    /// own. Returns at once; the probe server's `hello` is taken at its first use, so nobody
    /// waits while it warms up.
    pub fn probe_server(&mut self, timeout: Duration) -> Result<Worker, WorkerError> {
        let io = |source: std::io::Error| WorkerError::Spawn {
            python: PathBuf::from("the probe server's FIFOs"),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("harness-probe-")
            .tempdir()
            .map_err(io)?;
        let [requests, replies, stderr] =
            ["requests", "replies", "stderr"].map(|n| dir.path().join(n));
        for fifo in [&requests, &replies, &stderr] {
            mkfifo(fifo).map_err(io)?;
        }
        // Read-write: opening never waits, and the probe server's read end opens at once.
        let stdin = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&requests)
            .map_err(io)?;
        let (err_path, rep_path) = (stderr.clone(), replies.clone());
        let tail = stderr_tail(move || std::fs::File::open(err_path));
        let lines = line_channel(move || std::fs::File::open(rep_path));
        let forked: Result<Forked, _> = self.call(
            &Request::ProbeServer {
                requests: &requests,
                replies: &replies,
                stderr: &stderr,
            },
            timeout,
        );
        let forked = match forked {
            Ok(f) => f,
            Err(e) => {
                // Release the reader threads waiting in open(2) for a writer that never comes.
                for fifo in [&replies, &stderr] {
                    let _ = std::fs::OpenOptions::new().write(true).open(fifo);
                }
                return Err(e);
            }
        };
        let mut worker = Worker {
            server: Server::Forked(forked.pid),
            case_pid: None,
            stdin: Box::new(stdin),
            replies: lines,
            stderr_tail: tail,
            next_id: 0,
            pending_hello: None,
            hello: self.hello.clone(),
            _dir: dir,
        };
        worker.pending_hello = Some(worker.send(&Request::Hello {
            protocol: PROTOCOL_VERSION,
        })?);
        Ok(worker)
    }

    /// Forget what the worker wrote so far (a new case starts).
    pub fn clear_stderr_tail(&self) {
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The last lines the worker wrote to stderr (model prints, Python warnings).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Send one request and wait for its reply.
    pub fn call<T: DeserializeOwned>(
        &mut self,
        request: &Request<'_>,
        timeout: Duration,
    ) -> Result<T, WorkerError> {
        let id = self.send(request)?;
        self.receive(id, &request.op(), timeout)
    }

    /// Send a request without waiting: the harness can work while the worker does. Its reply
    /// must be taken with [`Worker::receive`] before the next request is sent.
    pub fn send(&mut self, request: &Request<'_>) -> Result<u64, WorkerError> {
        if !matches!(request, Request::Hello { .. }) {
            self.wait_hello()?;
        }
        self.next_id += 1;
        let id = self.next_id;
        let line = serde_json::to_string(&Envelope { id, request }).expect("requests serialize");
        if writeln!(self.stdin, "{line}")
            .and_then(|_| self.stdin.flush())
            .is_err()
        {
            return Err(self.died());
        }
        Ok(id)
    }

    /// Wait for the reply to request `id`.
    pub fn receive<T: DeserializeOwned>(
        &mut self,
        id: u64,
        op: &str,
        timeout: Duration,
    ) -> Result<T, WorkerError> {
        let deadline = Instant::now() + timeout;
        loop {
            if crate::interrupt::requested() {
                self.kill();
                return Err(WorkerError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Kill the case's child; the server stays, unless it does not confirm.
                if !self.kill_case() {
                    self.kill();
                }
                return Err(WorkerError::Timeout {
                    op: op.into(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            // Wake up now and then to notice Ctrl-C.
            let line = match self
                .replies
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    // A forked server's FIFO has no end of file while we hold it: look.
                    if matches!(self.server, Server::Forked(_)) && !self.is_alive() {
                        return Err(self.died());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.died()),
            };
            let Ok(reply) = serde_json::from_str::<Json>(&line) else {
                continue; // not a reply: something printed around the protocol
            };
            if let Ok(event) = Event::deserialize(&reply) {
                self.case_pid = None;
                return Err(WorkerError::CaseDied {
                    status: child_status(&event),
                    stderr_tail: self.stderr_tail(),
                });
            }
            let head = match ReplyHead::deserialize(&reply) {
                Ok(head) if head.id == Some(id) => head,
                Ok(_) => continue, // a reply to another request
                Err(e) => {
                    return Err(WorkerError::Protocol(format!(
                        "bad error reply to `{op}`: {e}"
                    )))
                }
            };
            if !head.ok {
                return Err(match head.error {
                    Some(body) => WorkerError::Reply(body),
                    None => {
                        WorkerError::Protocol(format!("a failed reply to `{op}` without its error"))
                    }
                });
            }
            return serde_json::from_value(reply)
                .map_err(|e| WorkerError::Protocol(format!("bad reply to `{op}`: {e}")));
        }
    }

    /// Kill the process (and the case's child, first, so the server reaps it) and reap it.
    fn kill(&mut self) {
        self.kill_case();
        match &mut self.server {
            Server::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Its parent, the fork server, reaps it (or init, once that one is gone).
            Server::Forked(pid) => signal_kill(*pid),
        }
    }

    /// Kill the case's child and wait for the server to confirm; false if it did not.
    fn kill_case(&mut self) -> bool {
        let Some(pid) = self.case_pid.take() else {
            return false;
        };
        signal_kill(pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .replies
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if serde_json::from_str::<Event>(&line).is_ok() {
                return true;
            }
        }
        false
    }

    /// Start a case: the server forks a child (a copy of the warm server, with nothing from
    /// earlier cases) that serves every request until [`Worker::end_case`]. Given the case's
    /// model module, the child is forked from that module's zygote, which imported it once for
    /// every case of the module in a row (each case still a fresh fork of it).
    pub fn begin_case(
        &mut self,
        timeout: Duration,
        module: Option<&ModuleRef>,
    ) -> Result<(), WorkerError> {
        #[derive(Deserialize)]
        struct Forked {
            pid: u32,
        }
        let f: Forked = self.call(&Request::Fork { module }, timeout)?;
        self.case_pid = Some(f.pid);
        Ok(())
    }

    /// End the case: its child exits and the server takes requests again. Returns the
    /// installed modules the child imported that the server has not (see [`Worker::preload`]).
    pub fn end_case(&mut self) -> Result<Vec<String>, WorkerError> {
        if self.case_pid.is_none() {
            return Ok(Vec::new());
        }
        let ended: Ended = self.call(&Request::End {}, Duration::from_secs(60))?;
        self.case_pid = None;
        Ok(ended.libraries)
    }

    /// Import installed modules in the fork server (between cases), so later children inherit
    /// them instead of importing them again: torchvision imports torch._dynamo, 1.3 s a case.
    /// The server never imports the user's code.
    pub fn preload(&mut self, modules: &[String]) -> Result<Preloaded, WorkerError> {
        self.call(&Request::Preload { modules }, Duration::from_secs(120))
    }

    /// Is the server process still running?
    pub fn is_alive(&mut self) -> bool {
        match &mut self.server {
            Server::Spawned(child) => matches!(child.try_wait(), Ok(None)),
            Server::Forked(pid) => pid_alive(*pid),
        }
    }

    fn died(&mut self) -> WorkerError {
        let status = match &mut self.server {
            Server::Spawned(child) => match child.wait() {
                Ok(s) => describe_status(s),
                Err(e) => format!("could not be waited for: {e}"),
            },
            Server::Forked(pid) => {
                signal_kill(*pid);
                "(the probe server) ended".into()
            }
        };
        // Give the stderr thread a moment to drain what the process wrote last.
        thread::sleep(Duration::from_millis(50));
        WorkerError::Died {
            status,
            stderr_tail: self.stderr_tail(),
        }
    }

    pub fn load(&mut self, req: &LoadRequest, timeout: Duration) -> Result<Loaded, WorkerError> {
        self.call(&Request::Load(req), timeout)
    }

    /// Export each variant on `input` as its spec says (`Case::export_spec`: the definition's
    /// method and options, and the case's); `dims` are the trace-time dim values (for evidence).
    #[allow(clippy::too_many_arguments)]
    pub fn export(
        &mut self,
        case: &str,
        input: &SampleRef,
        names: &[String],
        variants: Vec<Json>,
        dims: &std::collections::BTreeMap<String, i64>,
        out_dir: &Path,
        timeout: Duration,
    ) -> Result<ExportReply, WorkerError> {
        let request = Request::Export {
            case,
            input,
            names,
            variants,
            dims,
            out_dir,
        };
        self.call(&request, timeout)
    }

    /// Trace a fresh copy again on `input` and compare with `variant`'s graph.
    pub fn retrace(
        &mut self,
        case: &str,
        input: &SampleRef,
        names: &[String],
        variant: &str,
        timeout: Duration,
    ) -> Result<Retrace, WorkerError> {
        let request = Request::Retrace {
            case,
            input,
            names,
            variant,
        };
        self.call(&request, timeout)
    }

    /// Run eager, and each `(variant, artifact)` given, with the input moved to `device`.
    /// Send it; [`Worker::device_probe_result`] takes the reply.
    pub fn device_probe(
        &mut self,
        case: &str,
        input: &SampleRef,
        names: &[String],
        device: &str,
        artifacts: &[(String, PathBuf)],
    ) -> Result<u64, WorkerError> {
        let artifacts = artifacts
            .iter()
            .map(|(v, p)| (v.as_str(), p.as_path()))
            .collect();
        self.send(&Request::DeviceProbe {
            case,
            input,
            names,
            device,
            artifacts,
        })
    }

    /// The reply to [`Worker::device_probe`]: eager's run and each variant's, by name, and the
    /// seconds the worker spent on them.
    #[allow(clippy::type_complexity)]
    pub fn device_probe_result(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Result<(std::collections::BTreeMap<String, ProbeRun>, f64), WorkerError> {
        let mut reply: serde_json::Map<String, Json> = self.receive(id, "device_probe", timeout)?;
        reply.remove("id");
        reply.remove("ok");
        let seconds = reply
            .remove("seconds")
            .and_then(|s| s.as_f64())
            .unwrap_or(0.0);
        let runs = reply
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_value(v)
                    .map(|r| (k, r))
                    .map_err(|e| WorkerError::Protocol(format!("bad device_probe reply: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok((runs, seconds))
    }

    /// Run eager on each `(request id, input, fill uninitialized memory)`; the outputs are saved
    /// in one file under `out_dir`.
    /// Eager on samples, or (`program`) a saved torch.export program the same way.
    pub fn eager(
        &mut self,
        case: &str,
        samples: &[(String, SampleRef, bool)],
        (names, program): (&[String], Option<ProgramRef<'_>>),
        out_dir: &Path,
        timeout: Duration,
    ) -> Result<Vec<EagerResult>, WorkerError> {
        let samples = samples
            .iter()
            .map(|(id, input, fill)| EagerSample {
                id,
                input,
                fill_uninitialized: *fill,
            })
            .collect();
        let request = Request::Eager {
            case,
            samples,
            names,
            out_dir,
            program,
        };
        let reply: EagerReply = self.call(&request, timeout)?;
        Ok(reply.results)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill_case();
        let shutdown = Envelope {
            id: 0,
            request: &Request::Shutdown {},
        };
        let _ = writeln!(
            self.stdin,
            "{}",
            serde_json::to_string(&shutdown).unwrap_or_default()
        );
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if !self.is_alive() {
                if let Server::Spawned(child) = &mut self.server {
                    let _ = child.wait();
                }
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

/// SIGKILL to a process (the case's child, which `std::process` does not own).
fn signal_kill(pid: u32) {
    // SAFETY: kill(2) with a pid we were told by the worker and a constant signal.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// The status in a `child_exit` event, said as [`describe_status`] says it.
fn child_status(event: &Event) -> String {
    let Event::ChildExit { code, signal, .. } = event;
    if let Some(code) = code {
        return format!("exited with code {code}");
    }
    match signal {
        Some(sig) => format!("was killed by signal {sig}{}", signal_name(*sig as i32)),
        None => "ended".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// "exited with code 3", "was killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            format!("was killed by signal {sig}{}", signal_name(sig))
        }
        None => "ended".into(),
    }
}

/// Create a virtual environment at `venv` with the interpreter `base` (`harness setup`).
pub fn create_venv(base: &Path, venv: &Path) -> anyhow::Result<()> {
    let status = Command::new(base).args(["-m", "venv"]).arg(venv).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => anyhow::bail!("`{} -m venv {}` {s}", base.display(), venv.display()),
        Err(e) => anyhow::bail!("cannot run {}: {e}", base.display()),
    }
}

/// Install packages and requirements files into `python`'s environment with its own pip
/// (`harness setup`); pip talks to the terminal.
pub fn pip_install(python: &Path, packages: &[String], files: &[PathBuf]) -> anyhow::Result<()> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(packages);
    for f in files {
        cmd.arg("-r").arg(f);
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => anyhow::bail!("pip install into {} {s}", python.display()),
        Err(e) => anyhow::bail!("cannot run {}: {e}", python.display()),
    }
}

/// The torch version `python` imports (`None` when it cannot import torch).
pub fn torch_version(python: &Path) -> anyhow::Result<Option<String>> {
    let out = Command::new(python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", python.display()))?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_versions_match_by_release_not_build_tag() {
        assert!(same_torch("2.13.0", "2.13.0"));
        assert!(same_torch("2.13.0+cpu", "2.13.0"));
        assert!(same_torch("2.13.0+cu130", "2.13.0"));
        assert!(!same_torch("2.12.0+cpu", "2.13.0"));
        assert!(!same_torch("2.13.1", "2.13.0"));
        assert!(!same_torch("", "2.13.0"));
    }

    #[test]
    fn roots_come_after_the_worker_and_before_the_users_path() {
        let p = python_path(Path::new("/w"), &[PathBuf::from("/repo/src")]);
        let parts: Vec<PathBuf> = std::env::split_paths(&p).collect();
        assert_eq!(
            parts[..2],
            [PathBuf::from("/w"), PathBuf::from("/repo/src")]
        );
    }
}
