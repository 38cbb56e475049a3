"""Python side of the harness: imports models, traces and scripts them, runs eager.

The Rust harness starts one worker process and sends it line-delimited JSON requests on stdin;
each request gets exactly one JSON reply line on the *protocol* channel. Before anything else the
worker moves the protocol channel to a private file descriptor and points fd 1 at stderr, so
whatever a model prints (from Python or from C) can never corrupt the protocol. Tensors never
travel in JSON: inputs arrive as safetensors files written by the harness, eager outputs leave as
safetensors files plus a small JSON tree that describes their structure (tuple, list, dict,
scalars) and names the tensor leaves by key.

Protocol version 1. Requests: hello, fork, probe_server, load, export, eager, retrace,
device_probe, end, shutdown. Every reply has "id" (echoed) and "ok"; a failed reply carries
"error": {"kind", "message", "traceback"}. The process is a fork server: `fork` starts a child (a
copy of the warm server) that serves one case's requests until `end`; a child that dies otherwise
is reported by the server as a line {"event": "child_exit", "pid", "code" | "signal"}.
`probe_server` forks a second fork server, the probe server, which talks through three FIFOs the
harness made and warms the meta device's kernels (they import torch._dynamo, about 0.6 s) so that
the first server, on every case's critical path, never pays for them.
"""

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import io
import json
import linecache
import os
import re
import sys
import sysconfig
import time
import traceback
import warnings

PROTOCOL = 1
TRACEBACK_TAIL = 12


def _claim_protocol_channel():
    """Return (requests, replies) file objects that user code cannot reach."""
    req_fd = os.dup(0)
    rep_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # prints from models (Python or C) land on stderr
    sys.stdin = open(os.devnull, "r")
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    requests = os.fdopen(req_fd, "rb", buffering=0)
    replies = os.fdopen(rep_fd, "w", buffering=1, encoding="utf-8")
    return requests, replies


REQUESTS, REPLIES = _claim_protocol_channel()

warnings.filterwarnings("ignore", category=DeprecationWarning)
import torch  # noqa: E402  (after the channel is claimed: torch may print at import)
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

_WORKER_FILE = os.path.abspath(__file__)
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()["stdlib"]) + os.sep
_SITE_DIRS = tuple(
    os.path.abspath(p) + os.sep
    for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
)
_LOCATION = re.compile(r'File "([^"]+)", line (\d+)')


class HarnessError(Exception):
    """An error with a kind the harness understands (model_import, model_entry, ...)."""

    def __init__(self, kind, message, tb=None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.tb = tb or []


def _traceback_tail(exc):
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(lines).rstrip().splitlines()
    return text[-TRACEBACK_TAIL:]


def _error(kind, exc):
    return {
        "kind": kind,
        "message": f"{type(exc).__name__}: {exc}".strip(),
        "traceback": _traceback_tail(exc),
    }


def _is_user_frame(filename, allow_site):
    path = os.path.abspath(filename)
    if path == _WORKER_FILE or path.startswith(_TORCH_DIR) or filename.startswith("<"):
        return False
    if path.startswith(_SITE_DIRS):
        return allow_site
    return not path.startswith(_STDLIB_DIR)


def _user_location(stack):
    """The innermost frame of the user's code: their files first, then other libraries."""
    for allow_site in (False, True):
        frames = [f for f in stack if _is_user_frame(f.filename, allow_site)]
        if frames:
            return frames[-1].filename, frames[-1].lineno
    return None, None


@contextlib.contextmanager
def capture_warnings():
    """Record every non-deprecation warning with the user's file and line, merging duplicates."""
    merged = {}

    def hook(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning):
            return
        ufile, uline = _user_location(traceback.extract_stack()[:-1])
        if ufile is None:
            ufile, uline = filename, lineno
        key = (category.__name__, ufile, uline, str(message))
        if key in merged:
            merged[key]["count"] += 1
            return
        merged[key] = {
            "category": category.__name__,
            "message": str(message).strip(),
            "file": os.path.abspath(ufile),
            "line": uline,
            "source_line": linecache.getline(ufile, uline).strip(),
            "count": 1,
        }

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = hook
        records = []
        yield records
        records.extend(merged.values())


# --------------------------------------------------------------------------------------------
# Models


class Worker:
    def __init__(self):
        self.models = {}  # case -> (model, model spec)
        self.modules = {}  # (path, mtime) -> module
        self.deps = {}  # (path, mtime) -> the user's files it imported
        self.module_names = {}  # module name -> path
        self.trace_sigs = {}  # case -> signature of the trace-time graph
        self.eager_calls = 0  # names each eager call's output file

    # ---- model loading
    def _module_from_source(self, path):
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise HarnessError("model_import", f"model source {path} does not exist")
        key = (path, os.stat(path).st_mtime_ns)
        if key in self.modules:
            return self.modules[key], self.deps[key]
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        name = stem
        n = 1
        while self.module_names.get(name, path) != path:
            n += 1
            name = f"{stem}_{n}"
        self.module_names[name] = path
        directory = os.path.dirname(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # torch.jit.script looks classes up through sys.modules
        before = set(sys.modules)
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - a model may raise anything, SystemExit too
            sys.modules.pop(name, None)
            raise HarnessError(
                "model_import", f"importing {path} failed: {type(exc).__name__}: {exc}",
                _traceback_tail(exc),
            ) from exc
        # The user's files this model imported (its own and siblings): the harness caches
        # results by them, so an edit to any of them re-runs the case.
        files = {path}
        for mod_name in set(sys.modules) - before:
            f = getattr(sys.modules.get(mod_name), "__file__", None)
            if f and _is_user_frame(f, allow_site=False):
                files.add(os.path.abspath(f))
        self.modules[key] = module
        self.deps[key] = sorted(files)
        return module, self.deps[key]

    def op_load(self, req):
        case = req["case"]
        if req.get("source"):
            module, files = self._module_from_source(req["source"])
            where = req["source"]
        else:
            where = req["import"]
            try:
                module = importlib.import_module(where)
            except BaseException as exc:  # noqa: BLE001
                raise HarnessError(
                    "model_import", f"importing {where} failed: {type(exc).__name__}: {exc}",
                    _traceback_tail(exc),
                ) from exc
        entry = req["entry"]
        factory = module
        for part in entry.split("."):
            factory = getattr(factory, part, None)
            if factory is None:
                raise HarnessError("model_entry", f"{where} has no attribute {entry!r}")
        if not callable(factory):
            raise HarnessError("model_entry", f"{where}:{entry} is not callable")
        torch.manual_seed(int(req.get("seed", 0)))
        try:
            model = factory(**(req.get("kwargs") or {}))
        except BaseException as exc:  # noqa: BLE001
            raise HarnessError(
                "model_construct", f"{entry}(**kwargs) raised {type(exc).__name__}: {exc}",
                _traceback_tail(exc),
            ) from exc
        if not isinstance(model, torch.nn.Module):
            raise HarnessError(
                "model_entry", f"{entry} returned {type(model).__name__}, not a torch.nn.Module"
            )
        if req.get("eval", True):
            model.eval()
        self.models[case] = model
        if not req.get("source"):
            files = [os.path.abspath(module.__file__)] if getattr(module, "__file__", None) else []
        return {"class": type(model).__qualname__, "files": files, "state": _state_digest(model)}

    def _model(self, req):
        case = req["case"]
        if case not in self.models:
            raise HarnessError("protocol", f"case {case!r} is not loaded")
        return self.models[case]

    # ---- export
    def op_export(self, req):
        model = self._model(req)
        inputs = _load_inputs(req["input"], req["names"])
        out_dir = req["out_dir"]
        os.makedirs(out_dir, exist_ok=True)
        before = _state_digest(model)
        result = {}
        walks = {}
        for variant in req["variants"]:
            path = os.path.join(out_dir, f"{variant}.pt")
            if os.path.exists(path):
                os.remove(path)
            start = time.perf_counter()
            with capture_warnings() as records:
                try:
                    fresh = copy.deepcopy(model)
                    if variant == "traced":
                        with torch.no_grad():
                            artifact = torch.jit.trace(fresh, tuple(inputs), check_trace=False)
                    elif variant == "scripted":
                        artifact = torch.jit.script(fresh)
                    else:
                        raise HarnessError("protocol", f"unknown variant {variant!r}")
                    artifact.save(path)
                    entry = {"ok": True, "path": path}
                    try:
                        code, constants = artifact.code_with_constants
                        entry["code"] = code
                        # `.code` names tensor constants (CONSTANTS.c0) without their values:
                        # a baked value, or an edit to one, shows only here.
                        entry["constants"] = {
                            k: _describe_constant(v)
                            for k, v in sorted(constants.const_mapping.items())
                        }
                        entry["modules"] = _submodule_code(artifact)
                        walks[variant] = _Walk(artifact.inlined_graph)
                        entry["device_pins"] = walks[variant].pins
                    except Exception as exc:  # noqa: BLE001 - saved, but not printable
                        entry["code_error"] = f"{type(exc).__name__}: {exc}"
                except HarnessError:
                    raise
                except Exception as exc:  # noqa: BLE001 - an export failure is data
                    entry = {"ok": False, "error": _export_error(variant, exc)}
            entry["warnings"] = records
            entry["seconds"] = time.perf_counter() - start
            result[variant] = entry
        after = _state_digest(model)
        result["eager_state_changed"] = before != after
        if "traced" in walks:
            self.trace_sigs[req["case"]] = (walks["traced"].ops, walks["traced"].consts)
        result["evidence"] = _static_evidence(walks, req.get("dims") or {})
        return result

    # ---- diagnosis
    def op_retrace(self, req):
        """Trace again on another input and say how the recorded graph differs."""
        model = self._model(req)
        if req["case"] not in self.trace_sigs:
            raise HarnessError("protocol", "retrace before a successful trace")
        inputs = _load_inputs(req["input"], req["names"])
        start = time.perf_counter()
        with capture_warnings():
            try:
                with torch.no_grad():
                    traced = torch.jit.trace(copy.deepcopy(model), tuple(inputs), check_trace=False)
            except Exception as exc:  # noqa: BLE001 - evidence is optional
                return {"traced": False, "error": _error("trace_error", exc), "seconds": 0.0}
        seconds = time.perf_counter() - start
        ops0, consts0 = self.trace_sigs[req["case"]]
        walk = _Walk(traced.inlined_graph)
        ops1, consts1 = walk.ops, walk.consts
        reply = {
            "seconds": seconds,
            "traced": True,
            "same_ops": ops0 == ops1,
            # Other kinds of ops (not just more or fewer of the same, as an unrolled loop gives).
            "kinds_differ": set(ops0) != set(ops1),
            "ops_before": len(ops0),
            "ops_after": len(ops1),
        }
        if ops0 != ops1:
            i = next((i for i, (a, b) in enumerate(zip(ops0, ops1)) if a != b), min(len(ops0), len(ops1)))
            reply["first_difference"] = {
                "index": i,
                "before": ops0[i] if i < len(ops0) else None,
                "after": ops1[i] if i < len(ops1) else None,
            }
        changed = []
        if len(consts0) == len(consts1):
            for a, b in zip(consts0, consts1):
                if a["value"] != b["value"]:
                    changed.append({"type": a["type"], "before": a["value"], "after": b["value"], "where": a["where"]})
        reply["changed_constants"] = changed[:20]
        return reply

    def op_device_probe(self, req):
        """Run eager and the saved artifacts with inputs on another device (meta or cuda)."""
        model = self._model(req)
        device = req["device"]
        inputs = [_to(t, device) for t in _load_inputs(req["input"], req["names"])]
        reply = {}

        def attempt(make):
            try:
                with torch.no_grad():
                    return {"ok": True, "output": _encode(make()(*inputs), "o", None)}
            except Exception as exc:  # noqa: BLE001 - a failure here is the data
                return {"ok": False, "error": _error("device", exc)}

        start = time.perf_counter()
        reply["eager"] = attempt(lambda: copy.deepcopy(model).to(device))
        for variant, path in (req.get("artifacts") or {}).items():
            reply[variant] = attempt(lambda path=path: torch.jit.load(path, map_location=device))
        reply["seconds"] = time.perf_counter() - start
        return reply

    # ---- eager
    def op_eager(self, req):
        model = self._model(req)
        out_dir = req["out_dir"]
        os.makedirs(out_dir, exist_ok=True)
        self.eager_calls += 1
        path = os.path.join(out_dir, f"eager-{self.eager_calls}.safetensors")
        results = []
        files = {}
        outputs = {}
        for sample in req["samples"]:
            sid = sample["id"]
            try:
                inputs = _load_inputs(sample["input"], req["names"], files)
            except Exception as exc:  # noqa: BLE001
                raise HarnessError("protocol", f"cannot read sample {sid}: {exc}") from exc
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    output = model(*inputs)
            except Exception as exc:  # noqa: BLE001 - reported per sample
                results.append({"id": sid, "ok": False, "error": _error("eager_raised", exc)})
                continue
            seconds = time.perf_counter() - start
            tensors = {}
            try:
                tree = _encode(output, f"{sid}/o", tensors)
            except TypeError as exc:
                results.append({"id": sid, "ok": False, "error": _error("unsupported_output", exc)})
                continue
            outputs.update(tensors)
            results.append({"id": sid, "ok": True, "output": tree, "path": path, "seconds": seconds})
        # Every sample's outputs in one file (`<sample>/o`, `<sample>/o.0`, ...).
        save_file(outputs, path)
        return {"results": results}

    def op_hello(self, req):
        return {
            "protocol": PROTOCOL,
            "torch": torch.__version__.split("+")[0],
            "python": sys.version.split()[0],
            "pid": os.getpid(),
        }


def _state_digest(model):
    """A digest of parameters and buffers: tracing or scripting must never change the eager model."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        t = t.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load_inputs(ref, names, files=None):
    """forward's arguments for one sample, from {"file", "sample"}: a tensor file holding the
    sample's tensors under `<sample>/<name>` (one file holds every sample of a case). `x` is one
    tensor, `images[]` the list of tensors `images.0`, `images.1`, ... (as many as the file
    holds). `files` keeps files open across samples."""
    path, prefix = ref["file"], ref["sample"]
    f = files.get(path) if files is not None else None
    if f is None:
        f = safe_open(path, framework="pt")
        if files is not None:
            files[path] = f
    keys = set(f.keys())
    args = []
    for n in names:
        if n.endswith("[]"):
            base = f"{prefix}/{n[:-2]}"
            items = []
            while f"{base}.{len(items)}" in keys:
                items.append(f.get_tensor(f"{base}.{len(items)}").clone())
            args.append(items)
        elif f"{prefix}/{n}" in keys:
            # A copy: the file's tensors share memory, and a model may write into its input.
            args.append(f.get_tensor(f"{prefix}/{n}").clone())
        else:
            raise HarnessError("protocol", f"{path} lacks input {n!r} of sample {prefix}")
    return args


def _to(value, device):
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    return value.to(device)


def _export_error(variant, exc):
    err = _error("trace_error" if variant == "traced" else "script_compile_error", exc)
    message = str(exc)
    # Script errors carry the user's source location: "File "...", line N".
    for file, line in _LOCATION.findall(message) + [
        (f.filename, f.lineno) for f in reversed(traceback.extract_tb(exc.__traceback__))
    ]:
        if _is_user_frame(file, allow_site=True):
            err["file"] = os.path.abspath(file)
            err["line"] = int(line)
            err["source_line"] = linecache.getline(file, int(line)).strip()
            break
    lines = message.strip().splitlines()
    err["message"] = "\n".join(lines[:40])
    return err


def _nodes(block):
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def _where(node):
    """The user's file:line a graph node came from, if any."""
    for line in node.sourceRange().splitlines():
        m = re.match(r"(.+)\((\d+)\): ", line.strip())
        if m and _is_user_frame(m.group(1), allow_site=True):
            return f"{os.path.abspath(m.group(1))}:{m.group(2)}"
    return None


def _constant(node):
    out = node.output()
    kind = str(out.type())
    try:
        value = out.toIValue()
    except Exception:  # noqa: BLE001
        value = None
    if isinstance(value, torch.Tensor):
        text = f"tensor(shape={list(value.shape)}, dtype={str(value.dtype).replace('torch.', '')})"
        if value.numel() <= 4:
            text = f"tensor({value.tolist()})"
        value = text
    elif isinstance(value, torch.device):
        value = f'device("{value}")'
    else:
        value = repr(value)
    return {"type": kind, "value": value, "where": _where(node)}


def _submodule_code(artifact):
    """The code of every submodule with a forward, by attribute path: the top-level `.code`
    only calls them (`(fc1).forward(x, )`), so an edit inside one shows only here."""
    modules = []
    for name, sub in artifact.named_modules():
        if not name:
            continue
        try:
            code, constants = sub.code_with_constants
        except Exception:  # noqa: BLE001 - containers (ModuleList, ...) have no forward
            continue
        modules.append({
            "name": name,
            "code": code,
            "constants": {
                k: _describe_constant(v) for k, v in sorted(constants.const_mapping.items())
            },
        })
    return modules


def _describe_constant(value):
    """A constant of `.code`, as one stable line: small tensors in full, large ones by digest."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        head = f"tensor({str(t.dtype).replace('torch.', '')}, {list(t.shape)}"
        if t.numel() <= 16:
            return f"{head}, {t.flatten().tolist()})"
        digest = hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
        return f"{head}, sha256 {digest})"
    return repr(value)


class _Walk:
    """One walk over a graph (walking is the slow part: every node becomes a Python object, and
    every constant's source location is parsed): the ops it records (constants apart), its
    constants, described and in order, and what in it names a device."""

    def __init__(self, graph):
        self.ops, self.consts, self.pins = [], [], []
        for node in _nodes(graph):
            kind = node.kind()
            if kind == "prim::Constant":
                c = _constant(node)
                self.consts.append(c)
                if c["type"] == "Device":
                    self._pin(f"{c['value']} constant", c["where"])
            else:
                self.ops.append(kind)
                if kind in _DEVICE_OPS:
                    self._pin(kind, _where(node))

    def _pin(self, what, where):
        """Device constants (a trace records `device=cpu` for every factory call) and ops that
        move to or make a device. A graph with none makes every tensor on its inputs' device or
        the default one, exactly as eager does, so a second device cannot change what it does;
        the harness skips the meta probe for such graphs."""
        pin = f"{what} at {where}" if where else what
        if pin not in self.pins and len(self.pins) < 10:
            self.pins.append(pin)


_DEVICE_OPS = ("aten::cpu", "aten::cuda", "aten::device")


def _static_evidence(walks, dims):
    """What the traced graph froze that the scripted one keeps dynamic."""
    evidence = {}
    for variant, walk in walks.items():
        evidence[f"{variant}_control_flow"] = {
            "if": walk.ops.count("prim::If"),
            "loop": walk.ops.count("prim::Loop"),
        }
    if "traced" in walks:
        scripted_values = set()
        if "scripted" in walks:
            scripted_values = {(c["type"], c["value"]) for c in walks["scripted"].consts}
        dim_values = {str(v): k for k, v in dims.items() if v not in (0, 1)}
        frozen, seen = [], set()
        for c in walks["traced"].consts:
            if c["where"] is None or (c["type"], c["value"]) in scripted_values:
                continue
            if c["type"] == "int" and c["value"] in dim_values:
                c = dict(c, note=f"equals the trace-time value of dim {dim_values[c['value']]}")
            elif c["type"] not in ("Device", "float", "Tensor") and not c["value"].startswith("tensor("):
                continue
            key = (c["type"], c["value"], c["where"])
            if key not in seen:
                seen.add(key)
                frozen.append(c)
        evidence["traced_only_constants"] = frozen[:20]
    return evidence


def _encode(value, key, tensors):
    """Describe an output as a JSON tree; tensor leaves go into `tensors` under their key."""
    if isinstance(value, torch.Tensor):
        if tensors is None:  # describe only: no data (meta tensors have none)
            return {
                "t": "tensor_desc",
                "shape": list(value.shape),
                "dtype": str(value.dtype).replace("torch.", ""),
                "device": str(value.device),
            }
        if value.device.type != "cpu":
            value = value.cpu()
        tensors[key] = value.detach().clone().contiguous()
        return {"t": "tensor", "key": key}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int):
        return {"t": "int", "v": value}
    if isinstance(value, float):
        return {"t": "float", "v": repr(value)}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if value is None:
        return {"t": "none"}
    if isinstance(value, tuple):
        return {"t": "tuple", "items": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return {"t": "list", "items": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, dict):
        items = []
        for i, (k, v) in enumerate(value.items()):
            if not isinstance(k, (str, int, bool, float)):
                raise TypeError(f"dict key of type {type(k).__name__} cannot be compared")
            items.append([_encode(k, f"{key}.k{i}", tensors), _encode(v, f"{key}.{i}", tensors)])
        return {"t": "dict", "items": items}
    raise TypeError(f"output of type {type(value).__name__} cannot be compared")


def _reply(obj):
    REPLIES.write(json.dumps(obj, allow_nan=False, default=str) + "\n")
    REPLIES.flush()


def _warm_up():
    """Pay torch's lazy initialization once, in the fork server, so every case's child starts
    warm: a first trace and script, and their first runs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.nn.Linear(2, 2).eval()
            x = torch.zeros(1, 2)
            with torch.no_grad():
                torch.jit.trace(m, (x,), check_trace=False)(x)
            torch.jit.script(m)(x)
    except Exception:  # noqa: BLE001 - warming up is an optimization only
        pass


def _warm_up_meta():
    """The probe server's warm-up: the meta device's Python kernels import torch._dynamo on
    first use (about 0.6 s), which every probe child then inherits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.nn.Linear(2, 2).eval().to("meta")
            x = torch.zeros(1, 2, device="meta")
            with torch.no_grad():
                torch.relu(m(x) * 2 + 1).sum()
    except Exception:  # noqa: BLE001 - warming up is an optimization only
        pass


def _become_probe_server(worker, req):
    """In a child forked by `probe_server`: drop the first server's channel, take the FIFOs the
    harness made (stderr, then replies, then requests: the order the harness opens them), warm
    the meta kernels and serve as a fork server of its own. Never returns."""
    global REQUESTS, REPLIES
    try:
        REQUESTS.close()
        REPLIES.close()
        err = os.open(req["stderr"], os.O_WRONLY)
        os.dup2(err, 2)
        os.dup2(err, 1)
        os.close(err)
        REPLIES = open(req["replies"], "w", buffering=1, encoding="utf-8")
        REQUESTS = open(req["requests"], "rb", buffering=0)
        _warm_up_meta()
        serve(worker, child=False)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _read_buffered():
    """In a case's child: read requests through a buffer. The server reads its channel a byte
    at a time (an unbuffered readline), so that what follows a `fork` line stays in the pipe
    for the child; that costs a system call per byte, milliseconds for an `eager` request with
    many samples. The child is the channel's only reader until it exits, and the harness sends
    nothing after `end` until the child has answered it, so reading ahead loses nothing."""
    global REQUESTS
    REQUESTS = io.BufferedReader(REQUESTS, buffer_size=1 << 16)


def serve(worker, child):
    """The request loop. The fork server answers `fork` by forking a child that serves the
    case's requests on the same channel until `end` (then exits), while the server waits; if the
    child dies another way, the server says so with a `child_exit` event line."""
    while True:
        line = REQUESTS.readline()
        if not line:
            if child:
                os._exit(0)
            return
        try:
            req = json.loads(line)
        except ValueError as exc:
            _reply({"id": None, "ok": False, "error": _error("protocol", exc)})
            continue
        rid = req.get("id")
        op = req.get("op")
        if op == "shutdown":
            _reply({"id": rid, "ok": True})
            if child:
                os._exit(0)
            return
        if op == "fork" and not child:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _read_buffered()
                _reply({"id": rid, "ok": True, "pid": os.getpid()})
                serve(worker, child=True)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status):
                _reply({"event": "child_exit", "pid": pid, "signal": os.WTERMSIG(status)})
            elif os.WEXITSTATUS(status) != 0:
                _reply({"event": "child_exit", "pid": pid, "code": os.WEXITSTATUS(status)})
            continue
        if op == "probe_server" and not child:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _become_probe_server(worker, req)
            _reply({"id": rid, "ok": True, "pid": pid})
            continue
        if op == "end" and child:
            _reply({"id": rid, "ok": True})
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        handler = getattr(worker, f"op_{op}", None)
        if handler is None:
            _reply({"id": rid, "ok": False, "error": {"kind": "protocol", "message": f"unknown op {op!r}", "traceback": []}})
            continue
        try:
            body = handler(req)
            body.update({"id": rid, "ok": True})
            _reply(body)
        except HarnessError as exc:
            _reply({"id": rid, "ok": False, "error": {"kind": exc.kind, "message": exc.message, "traceback": exc.tb}})
        except Exception as exc:  # noqa: BLE001 - the worker must answer, whatever happened
            _reply({"id": rid, "ok": False, "error": _error("internal", exc)})
        finally:
            sys.stdout.flush()
            sys.stderr.flush()


def main():
    _warm_up()
    serve(Worker(), child=False)
    # The interpreter's teardown with torch loaded takes a few hundred ms that nothing needs.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
