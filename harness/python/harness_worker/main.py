"""The worker's entry point: claim the protocol channel, then import torch, warm up and serve."""

import os
import sys
import warnings

from harness_worker.protocol import Channel, serve


def main() -> None:
    """Run the fork server until its channel ends or it is told to shut down."""
    # First of all, before torch (which may print at import): nothing may write to the channel.
    channel = Channel.claim()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from harness_worker.warmup import warm_up, warm_up_export
    from harness_worker.worker import Worker

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warm_up()
    if os.environ.get("HARNESS_WARM_EXPORT"):
        warm_up_export()
    serve(Worker(), channel, child=False)
    # The interpreter's teardown with torch loaded takes a few hundred ms that nothing needs.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
