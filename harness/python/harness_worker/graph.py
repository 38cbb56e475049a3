"""Graph analysis: ops, constants and device pins of a TorchScript graph; static evidence; how a
re-trace's graph differs from the first trace's."""

import hashlib
import os
import re
from collections.abc import Iterator
from typing import Any

import torch

from harness_worker.frames import is_user_frame

DEVICE_OPS = ("aten::cpu", "aten::cuda", "aten::device")
MAX_PINS = 10
MAX_LISTED = 20  # traced-only and changed constants


def _nodes(block: Any) -> Iterator[Any]:
    """Every node of a graph or block, nested blocks included, in order."""
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def _where(node: Any) -> str | None:
    """The user's file:line a graph node came from, if any."""
    for line in node.sourceRange().splitlines():
        m = re.match(r"(.+)\((\d+)\): ", line.strip())
        if m and is_user_frame(m.group(1), allow_site=True):
            return f"{os.path.abspath(m.group(1))}:{m.group(2)}"
    return None


def _constant(node: Any) -> dict[str, Any]:
    """A prim::Constant node as {"type", "value", "where"}."""
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


def describe_constant(value: Any) -> str:
    """A constant of `.code`, as one stable line: small tensors in full, large ones by digest."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        head = f"tensor({str(t.dtype).replace('torch.', '')}, {list(t.shape)}"
        if t.numel() <= 16:
            return f"{head}, {t.flatten().tolist()})"
        digest = hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]
        return f"{head}, sha256 {digest})"
    return repr(value)


def code_constants(module: Any) -> tuple[str, dict[str, str]]:
    """A script module's `.code` and the described values of the tensor constants it names
    (`CONSTANTS.c0`): a baked value, or an edit to one, shows only there."""
    code, constants = module.code_with_constants
    described = {k: describe_constant(v) for k, v in sorted(constants.const_mapping.items())}
    return code, described


def submodule_code(artifact: Any) -> list[dict[str, Any]]:
    """The code of every submodule with a forward, by attribute path: the top-level `.code`
    only calls them (`(fc1).forward(x, )`), so an edit inside one shows only here."""
    modules = []
    for name, sub in artifact.named_modules():
        if not name:
            continue
        try:
            code, constants = code_constants(sub)
        except Exception:  # noqa: BLE001 - containers (ModuleList, ...) have no forward
            continue
        modules.append({"name": name, "code": code, "constants": constants})
    return modules


class Walk:
    """One walk over a graph (walking is the slow part: every node becomes a Python object, and
    every constant's source location is parsed): the ops it records (constants apart), its
    constants, described and in order, and what in it names a device."""

    def __init__(self, graph: Any) -> None:
        self.ops: list[str] = []
        self.consts: list[dict[str, Any]] = []
        self.pins: list[str] = []
        for node in _nodes(graph):
            kind = node.kind()
            if kind == "prim::Constant":
                c = _constant(node)
                self.consts.append(c)
                if c["type"] == "Device":
                    self._pin(f"{c['value']} constant", c["where"])
            else:
                self.ops.append(kind)
                if kind in DEVICE_OPS:
                    self._pin(kind, _where(node))

    def _pin(self, what: str, where: str | None) -> None:
        """Device constants (a trace records `device=cpu` for every factory call) and ops that
        move to or make a device. A graph with none makes every tensor on its inputs' device or
        the default one, exactly as eager does, so a second device cannot change what it does;
        the harness skips the meta probe for such graphs."""
        pin = f"{what} at {where}" if where else what
        if pin not in self.pins and len(self.pins) < MAX_PINS:
            self.pins.append(pin)


def _control_flow(walk: Walk) -> dict[str, int]:
    return {"if": walk.ops.count("prim::If"), "loop": walk.ops.count("prim::Loop")}


def _traced_only_constants(traced: Walk, scripted: Walk | None, dims: dict[str, Any]) -> list[dict[str, Any]]:
    """Constants of the user's code the trace froze that the scripted graph does not hold."""
    scripted_values = {(c["type"], c["value"]) for c in scripted.consts} if scripted else set()
    dim_values = {str(v): k for k, v in dims.items() if v not in (0, 1)}
    frozen, seen = [], set()
    for c in traced.consts:
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
    return frozen[:MAX_LISTED]


def static_evidence(traced: Walk | None, scripted: Walk | None, dims: dict[str, Any]) -> dict[str, Any]:
    """What the traced graph froze that the scripted one keeps dynamic. Either walk may be absent
    (no such variant, or its export failed); its fields are then left out."""
    evidence: dict[str, Any] = {}
    if traced is not None:
        evidence["traced_control_flow"] = _control_flow(traced)
    if scripted is not None:
        evidence["scripted_control_flow"] = _control_flow(scripted)
    if traced is not None:
        evidence["traced_only_constants"] = _traced_only_constants(traced, scripted, dims)
    return evidence


TraceSig = tuple[list[str], list[dict[str, Any]]]


def trace_diff(before: TraceSig, after: Walk) -> dict[str, Any]:
    """How a re-trace's graph differs from the first trace's (ops, then constants)."""
    ops0, consts0 = before
    ops1, consts1 = after.ops, after.consts
    reply: dict[str, Any] = {
        "same_ops": ops0 == ops1,
        # Other kinds of ops (not just more or fewer of the same, as an unrolled loop gives).
        "kinds_differ": set(ops0) != set(ops1),
        "ops_before": len(ops0),
        "ops_after": len(ops1),
    }
    if ops0 != ops1:
        i = next(
            (i for i, (a, b) in enumerate(zip(ops0, ops1, strict=False)) if a != b),
            min(len(ops0), len(ops1)),
        )
        reply["first_difference"] = {
            "index": i,
            "before": ops0[i] if i < len(ops0) else None,
            "after": ops1[i] if i < len(ops1) else None,
        }
    changed = []
    if len(consts0) == len(consts1):
        for a, b in zip(consts0, consts1, strict=True):
            if a["value"] != b["value"]:
                changed.append(
                    {"type": a["type"], "before": a["value"], "after": b["value"], "where": a["where"]}
                )
    reply["changed_constants"] = changed[:MAX_LISTED]
    return reply
