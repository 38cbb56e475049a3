"""Python side of the harness: imports models, exports them (trace, script, ...), runs eager.

The Rust harness writes this package's files to `<tmp>/harness_worker/` and runs
`python -u -m harness_worker` with `<tmp>` on PYTHONPATH. The protocol (version 2) is described in
`harness_worker.protocol`. Importing any module of the package has no side effects: the protocol
channel is claimed, and warnings filters are installed, only by `harness_worker.main.main()`.

Modules: errors (ErrorKind, error bodies), protocol (channel, codec, request loop, fork and probe
servers), main (entry point), worker (the op_* methods), variants (EXPORTERS, export), graph
(graph walks, static evidence, re-trace differences), eager (inputs, eager runs, output
encoding), model (model import), frames (user frames, warnings), probe (device probe), warmup.
"""
