"""Warm-ups, paid once in a fork server so that every child forked from it starts warm.

Both run only kernels too small to start OpenMP's thread pool: the pool does not survive a fork,
and a child forked after a warm-up with a real convolution hangs in its first one.
"""

import warnings

import torch


def warm_up() -> None:
    """Pay torch's lazy initialization once, in the fork server, so every case's child starts
    warm: a first trace and script, their first runs, and a run in the determinism repeat's
    mode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.nn.Linear(2, 2).eval()
            x = torch.zeros(1, 2)
            with torch.no_grad():
                torch.jit.trace(m, (x,), check_trace=False)(x)
            torch.jit.script(m)(x)
            # The determinism repeat's mode (without torch._dynamo: see `eager._deterministic`).
            from harness_worker.eager import _filled_uninitialized

            with _filled_uninitialized(True), torch.no_grad():
                m(x)
    except Exception:  # noqa: BLE001 - warming up is an optimization only
        pass


def warm_up_export() -> None:
    """torch.export's first use imports torch._dynamo, sympy and the export passes (about 2 s);
    paid once in the fork server when the run exports (`HARNESS_WARM_EXPORT`). It starts no
    threads, so children fork safely after it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = torch.nn.Linear(2, 2).eval()
            batch = torch.export.Dim("batch", min=1, max=4)
            program = torch.export.export(m, (torch.zeros(2, 2),), dynamic_shapes=({0: batch},))
            with torch.no_grad():
                program.module()(torch.zeros(3, 2))
    except Exception:  # noqa: BLE001 - warming up is an optimization only
        pass


def warm_up_meta() -> None:
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
