"""The plain-Python reference of `cargo xtask bench`: what one would write without the harness.

One process, for each case: import the model (seeded), make the same samples the harness ran
(same count, shapes and dtypes; values drawn here, not bit-identical), `torch.jit.trace` and
`torch.jit.script` it (check_trace=False), save both artifacts and load them back with
`torch.jit.load`, run eager, traced and scripted on every sample under no_grad, and compare
with `torch.allclose` (structure-aware: tuples, lists, dicts).

Usage: python bench_reference.py MANIFEST.json

The manifest (written by xtask) names the results.json of the harness's cold run, from which the
cases, their model files, their samples and their value generators are read, plus what
results.json does not keep (the entry's kwargs, `eval`), and a folder for the artifacts. No YAML
is parsed here (PyYAML is not in the harness's environment).

Prints one JSON line on stdout: wall time (from the first line of this script, torch's import
included), the torch work it timed (trace, script, forward passes), save/load time, counts.
"""

import time

_START = time.perf_counter()

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "bool": torch.bool,
}


def load_model(case, extra, case_dir):
    origin = case["model"]["origin"]
    if origin.endswith(".py"):
        path = os.path.abspath(os.path.join(case_dir, origin))
        name = "bench_ref_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        module = sys.modules.get(name)
        if module is None:
            sys.path.insert(0, os.path.dirname(path))
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # torch.jit.script looks classes up here
            spec.loader.exec_module(module)
    else:
        module = importlib.import_module(origin)
    factory = module
    for part in case["model"]["entry"].split("."):
        factory = getattr(factory, part)
    torch.manual_seed(int(case.get("seed") or 0))
    model = factory(**extra.get("kwargs", {}))
    if extra.get("eval", True):
        model.eval()
    return model


def parse_values(text, dtype):
    """`uniform [-1, 1]`, `normal (mean 0, std 1)`, `int [0, 99]`, `bool 0.5` (results.json spec
    form)."""
    kind, _, rest = text.partition(" ")
    nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?", rest)]
    if kind in ("uniform", "normal", "int", "bool") and nums:
        return kind, nums
    if dtype == torch.bool:
        return "bool", [0.5]
    if dtype == torch.uint8:
        return "int", [0, 255]
    if not dtype.is_floating_point:
        return "int", [-10, 10]
    return "uniform", [-1.0, 1.0]


def make_tensor(shape, dtype, values, gen):
    kind, nums = values
    if kind == "int":
        return torch.randint(int(nums[0]), int(nums[1]) + 1, shape, generator=gen).to(dtype)
    if kind == "bool":
        return (torch.rand(shape, generator=gen) < nums[0]).to(dtype)
    if kind == "normal":
        t = torch.randn(shape, generator=gen, dtype=torch.float64) * nums[1] + nums[0]
    else:
        t = torch.rand(shape, generator=gen, dtype=torch.float64) * (nums[1] - nums[0]) + nums[0]
    return t.to(dtype)


def make_samples(case, seed):
    """The harness's samples (results.json `samples[].inputs`: `x: 3x4 float32, ...`)."""
    gen = torch.Generator().manual_seed(seed)
    spec_inputs = {i["name"]: i for i in (case.get("spec") or {}).get("inputs", [])}
    samples = []
    for sample in case.get("samples", []):
        args: dict = {}  # input name -> tensor, or list of tensors (`images.0`, `images.1`)
        for part in sample["inputs"].split(", "):
            name, _, rest = part.partition(": ")
            dims, dtype_name = rest.rsplit(" ", 1)
            shape = [] if dims == "scalar" else [int(d) for d in dims.split("x")]
            dtype = DTYPES[dtype_name]
            base, dot, _ = name.partition(".")
            values = parse_values(spec_inputs.get(base, {}).get("values", ""), dtype)
            tensor = make_tensor(shape, dtype, values, gen)
            if dot:
                args.setdefault(base, []).append(tensor)
            else:
                args[base] = tensor
        args = list(args.values())
        samples.append(args)
    return samples


def clone(a):
    return [t.clone() for t in a] if isinstance(a, list) else a.clone()


def same(a, b, rtol, atol):
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return (
            a.shape == b.shape
            and a.dtype == b.dtype
            and torch.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        )
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(same(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rtol, atol) for k in a)
    return a == b


def main():
    manifest = json.load(open(sys.argv[1]))
    results = json.load(open(manifest["results"]))
    work = manifest["work"]
    os.makedirs(work, exist_ok=True)
    warnings.simplefilter("ignore")
    t = {"trace": 0.0, "script": 0.0, "forward": 0.0, "save_load": 0.0}
    counts = {"cases": 0, "samples": 0, "mismatches": 0, "errors": 0}
    for case in results["cases"]:
        extra = manifest["cases"].get(case["name"], {})
        counts["cases"] += 1
        try:
            model = load_model(case, extra, os.path.dirname(os.path.abspath(case["file"])))
            samples = make_samples(case, int(case.get("seed") or 0))
        except Exception:  # noqa: BLE001 - a case the harness could not run either
            counts["errors"] += 1
            continue
        spec = case.get("spec") or {}
        rtol, atol = spec.get("rtol", 1e-5), spec.get("atol", 1e-6)
        artifacts = {}
        for variant in case.get("variants") or {}:
            path = os.path.join(work, f"{case['name']}.{variant}.pt")
            try:
                start = time.perf_counter()
                if variant == "traced":
                    with torch.no_grad():
                        art = torch.jit.trace(model, tuple(samples[0]), check_trace=False)
                    t["trace"] += time.perf_counter() - start
                else:
                    art = torch.jit.script(model)
                    t["script"] += time.perf_counter() - start
                start = time.perf_counter()
                art.save(path)
                artifacts[variant] = torch.jit.load(path)
                t["save_load"] += time.perf_counter() - start
            except Exception:  # noqa: BLE001 - an export failure is a result
                counts["errors"] += 1
        with torch.no_grad():
            for args in samples:
                counts["samples"] += 1
                start = time.perf_counter()
                try:
                    expected = model(*[clone(a) for a in args])
                except Exception:  # noqa: BLE001
                    counts["errors"] += 1
                    t["forward"] += time.perf_counter() - start
                    continue
                outs = {}
                for variant, art in artifacts.items():
                    try:
                        outs[variant] = art(*[clone(a) for a in args])
                    except Exception:  # noqa: BLE001 - a variant raising is a result
                        outs[variant] = None
                t["forward"] += time.perf_counter() - start
                for out in outs.values():
                    if out is None or not same(expected, out, rtol, atol):
                        counts["mismatches"] += 1
    wall = time.perf_counter() - _START
    torch_s = t["trace"] + t["script"] + t["forward"]
    print(json.dumps({"wall_s": wall, "torch_s": torch_s, **{f"{k}_s": v for k, v in t.items()}, **counts}))


if __name__ == "__main__":
    main()
