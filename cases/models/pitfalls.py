"""One model per pitfall, from the PyTorch documentation and well-known public reports.

The case files under cases/ say what tracing and scripting do to each, and where it comes from.
"""

from typing import Dict

import torch


class LoopOverBatch(torch.nn.Module):
    """A Python loop over the batch dimension: tracing unrolls it for the trace-time size."""

    def forward(self, x):
        rows = []
        for i in range(x.shape[0]):
            rows.append(x[i] * (i + 1))
        return torch.stack(rows)


class FlattenLen(torch.nn.Module):
    """x.view(len(x), -1): the trace freezes len(x), so other batch sizes raise or reshape wrong."""

    def forward(self, x):
        return x.view(len(x), -1)


class NumpyRoundTrip(torch.nn.Module):
    """A numpy round trip: tracing records the result as a constant; scripting rejects numpy."""

    def forward(self, x):
        return torch.from_numpy(x.numpy() * 2.0 + 1.0)


class MaskFillFinfo(torch.nn.Module):
    """The attention-mask idiom masked_fill(mask, torch.finfo(x.dtype).min)."""

    def forward(self, x):
        return x.masked_fill(x > 0.5, torch.finfo(x.dtype).min)


class DictOutput(torch.nn.Module):
    """Returns a dict: torch.jit.trace (strict) refuses dict outputs; scripting keeps them."""

    def forward(self, x) -> Dict[str, torch.Tensor]:
        return {"double": x * 2, "neg": -x}


class DropoutHead(torch.nn.Module):
    """Dropout left in training mode: eager itself is random."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(6, 6)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, x):
        return self.dropout(self.linear(x))


class FeatureHash(torch.nn.Module):
    """Feature hashing with Python ints: unbounded in Python, int64 (wrapping) in TorchScript."""

    def forward(self, ids):
        h = 17
        for i in range(ids.shape[1]):
            h = h * 1000003 + int(ids[0, i])
        return ids + h % 1000


class ScaledByWidth(torch.nn.Module):
    """Warns while tracing (torch.tensor of a size becomes a constant) yet stays correct: the
    width it freezes is fixed by the model's input contract."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        width = torch.tensor(x.shape[-1], dtype=torch.float32)
        return self.proj(x) / torch.sqrt(width)


class OptionalBias(torch.nn.Module):
    """An unannotated `bias=None` argument: scripting types it as Tensor, so calling the scripted
    artifact without it fails where eager does not."""

    def forward(self, x, bias=None):
        if bias is not None:
            x = x + bias
        return x * 2


class SplitHeads(torch.nn.Module):
    """Attention-style head split with torch.split: eager returns a tuple, TorchScript's
    aten::split a List[Tensor]. The tensors are the same; a C++ caller doing
    `output.toTuple()` throws on the scripted artifact."""

    def forward(self, x):
        return torch.split(x, 2, dim=-1)
