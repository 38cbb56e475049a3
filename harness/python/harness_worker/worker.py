"""The Worker: one case's state (its model, the first trace's graph) and an op_* method per
ordinary request."""

import copy
import importlib
import os
import sys
import time
import warnings
from typing import Any

import torch

from harness_worker import program
from harness_worker.calls import load_args
from harness_worker.eager import exact_numerics, run_eager, state_digest
from harness_worker.errors import ErrorKind, HarnessError, error_body
from harness_worker.frames import capture_warnings, is_library, modules_mark, modules_since, site_dirs
from harness_worker.graph import TraceSig, Walk, trace_diff
from harness_worker.model import ModelLoader, construct, user_files
from harness_worker.probe import device_probe
from harness_worker.protocol import PROTOCOL
from harness_worker.variants import EXPORTERS, export_all, parse_variants


class Worker:
    """Serves `op_<name>(request) -> reply body`; raising HarnessError fails the request."""

    def __init__(self) -> None:
        self.loader = ModelLoader()
        self.models: dict[str, torch.nn.Module] = {}  # case -> model
        # case -> (signature of the first trace variant's graph, that variant's options)
        self.trace_sigs: dict[tuple[str, str], tuple[TraceSig, dict[str, Any]]] = {}
        self.eager_calls = 0  # names each eager call's output file
        self.programs: dict[str, Any] = {}  # saved program path -> loaded
        self.modules_at_start: str | None = None  # a case's child: its server's newest module
        self.preimported: list[str] = []  # a zygote: the user's files its model import pulled in
        self.device = "cpu"  # the case's device: its model, inputs and eager runs are there

    def start_case(self) -> None:
        """In a case's fresh child (or a zygote): remember what the fork server had imported. A
        zygote's children keep the zygote's record, made before it imported the model."""
        if self.modules_at_start is None:
            self.modules_at_start = modules_mark()

    def preimport(self, module: dict[str, Any]) -> list[str]:
        """In a zygote: import a case's model module as `load` would (cached for its children);
        the user's files it imported."""
        before = modules_mark()
        if module.get("source"):
            files = self.loader.from_source(module["source"])[1]
        else:
            files = self.loader.by_name(module["import"])[1]
        self.preimported = sorted(set(files) | user_files(set(modules_since(before))))
        return self.preimported

    def new_libraries(self) -> list[str]:
        """The installed modules this child imported that its server had not, in import order:
        what a `preload` of the server would spare the next children."""
        new = modules_since(self.modules_at_start)
        return [name for name in new if is_library(sys.modules.get(name))]

    def op_preload(self, req: dict[str, Any]) -> dict[str, Any]:
        """Import installed modules here, in the fork server, between cases (the harness asks for
        each once; one that fails to import is left alone: its case's child imports it as
        before)."""
        start = time.perf_counter()
        imported = 0
        for name in req.get("modules") or []:
            if name in sys.modules:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    importlib.import_module(name)
                imported += 1
            except Exception:  # noqa: BLE001, S112 - preloading is an optimization only
                continue
        return {"imported": imported, "seconds": time.perf_counter() - start}

    def _model(self, req: dict[str, Any]) -> torch.nn.Module:
        case = req["case"]
        if case not in self.models:
            raise HarnessError(ErrorKind.PROTOCOL, f"case {case!r} is not loaded")
        return self.models[case]

    def op_hello(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL,
            "torch": torch.__version__.split("+")[0],
            "python": sys.version.split()[0],
            "pid": os.getpid(),
            "site": site_dirs(),
        }

    def op_load(self, req: dict[str, Any]) -> dict[str, Any]:
        before = modules_mark()
        if req.get("source"):
            where = req["source"]
            module, files = self.loader.from_source(where)
        else:
            where = req["import"]
            module, files = self.loader.by_name(where)
        model = construct(module, where, req)
        self.device = req.get("device") or "cpu"
        if self.device != "cpu":
            # Only here, in the case's child: a trace records the flags in every convolution
            # (`torch._convolution(..., deterministic, ..., allow_tf32)`), and CPU artifacts
            # must stay as a team's own trace makes them.
            exact_numerics()
            model = _moved(model, self.device)
        self.models[req["case"]] = model
        # Every user file the import and the constructor pulled in, transitively: the harness
        # caches the verdict by their contents.
        # (In a zygote's child, the zygote's import pulled them in: `preimported`.)
        files = sorted(set(files) | user_files(set(modules_since(before))) | set(self.preimported))
        return {"class": type(model).__qualname__, "files": files, "state": state_digest(model)}

    def op_export(self, req: dict[str, Any]) -> dict[str, Any]:
        model = self._model(req)
        variants = parse_variants(req["variants"])
        inputs = load_args(req["input"], req["names"], device=self.device)
        reply, walks = export_all(model, inputs, variants, req["out_dir"], req.get("dims") or {})
        # A re-trace is made as the first trace variant was, and compared with the graph of the
        # variant it explains (a fresh trace, or a shipped file made elsewhere).
        options = next((v.options for v in variants if v.method == "trace"), {})
        for name, walk in walks.items():
            self.trace_sigs[(req["case"], name)] = ((walk.ops, walk.consts), options)
        return reply

    def op_retrace(self, req: dict[str, Any]) -> dict[str, Any]:
        """Trace again on another input (as the first trace variant was made) and say how the
        recorded graph differs."""
        model = self._model(req)
        key = (req["case"], req["variant"])
        if key not in self.trace_sigs:
            raise HarnessError(ErrorKind.PROTOCOL, f"retrace of {req['variant']!r} before it was exported")
        sig, options = self.trace_sigs[key]
        inputs = load_args(req["input"], req["names"], device=self.device)
        start = time.perf_counter()
        with capture_warnings():
            try:
                trace = EXPORTERS["trace"]
                traced = trace.make(*trace.arguments(copy.deepcopy(model), inputs), options)
            except Exception as exc:  # noqa: BLE001 - evidence is optional
                return {"traced": False, "error": error_body(ErrorKind.TRACE_ERROR, exc), "seconds": 0.0}
        seconds = time.perf_counter() - start
        reply = {"seconds": seconds, "traced": True}
        reply.update(trace_diff(sig, Walk(traced.inlined_graph)))
        return reply

    def op_device_probe(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run eager and the saved artifacts with inputs on another device (meta or cuda)."""
        return device_probe(self._model(req), req)

    def op_eager(self, req: dict[str, Any]) -> dict[str, Any]:
        """Eager on samples; or, given `program` (a saved torch.export program), that program,
        loaded once per case and run the same way."""
        model = self._model(req)
        if req.get("program"):
            model = self._program(req["program"]["path"], req["program"].get("method", "export"))
        self.eager_calls += 1
        path = os.path.join(req["out_dir"], f"eager-{self.eager_calls}.safetensors")
        return run_eager(model, req, path, self.device)

    def _program(self, path: str, method: str) -> Any:
        if path not in self.programs:
            try:
                loaded = program.load(path, method)
                # An AOTInductor package is compiled for the device it was exported on: as is.
                moves = self.device != "cpu" and hasattr(loaded, "to")
                self.programs[path] = loaded.to(self.device) if moves else loaded
            except Exception as exc:  # noqa: BLE001 - the harness reports it as a load error
                raise HarnessError(ErrorKind.EXPORT_ERROR, f"cannot load {path}: {exc}") from exc
        return self.programs[path]


def _moved(model: torch.nn.Module, device: str) -> torch.nn.Module:
    """The model with its parameters and buffers on the case's device."""
    try:
        return model.to(device)
    except Exception as exc:  # noqa: BLE001 - a device this machine lacks, a model that refuses
        raise HarnessError(ErrorKind.DEVICE, f"cannot move the model to {device}: {exc}") from exc
