"""Make the shipped artifacts the `shipped_*` cases check, as a team's release script would
(run from the repository root: `.venv/bin/python cases/artifacts/make_artifacts.py`; the files
are committed, made with torch 2.13.0).

- `my_cell.safetensors` + `my_cell.pt`: MyCell's trained weights and the trace shipped with them,
  saved with `_extra_files` (release metadata inside the archive: a non-default save option).
- `decision_gate.pt`: MyDecisionGate traced on a positive batch: only one branch is in the file.
- `newer_torch.pt`: MyCell's trace with its code edited to call `aten::tanh_v2`, an op this
  libtorch does not have, as a file saved by a newer torch calls ops added after 2.13; loading
  it fails, as deploying it to this libtorch would.
"""

import io
import os
import sys
import zipfile

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))

from tutorial import MyCell, MyDecisionGate  # noqa: E402


def _cell() -> torch.jit.ScriptModule:
    torch.manual_seed(1234)  # "training": weights other than the harness's seed gives
    cell = MyCell().eval()
    save_file(cell.state_dict(), os.path.join(HERE, "my_cell.safetensors"))
    return torch.jit.trace(cell, (torch.rand(3, 4), torch.rand(3, 4)))


def _edited(buffer: bytes, old: str, new: str) -> bytes:
    """The archive with `old` replaced by `new` in its code files."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if "/code/" in info.filename and info.filename.endswith(".py"):
                data = data.decode().replace(old, new).encode()
            dst.writestr(info, data)
    return out.getvalue()


def main() -> None:
    cell = _cell()
    torch.jit.save(cell, os.path.join(HERE, "my_cell.pt"), _extra_files={"release.json": '{"version": "3.1"}'})
    gate = torch.jit.trace(MyDecisionGate(), torch.ones(3, 4))
    torch.jit.save(gate, os.path.join(HERE, "decision_gate.pt"))
    buffer = io.BytesIO()
    torch.jit.save(cell, buffer)
    with open(os.path.join(HERE, "newer_torch.pt"), "wb") as f:
        f.write(_edited(buffer.getvalue(), "torch.tanh(", "torch.tanh_v2("))


if __name__ == "__main__":
    main()
