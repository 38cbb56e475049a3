"""Every dtype torch returns leaves the worker in a form safetensors carries, named by its dtype."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness_worker.eager import encode


@pytest.mark.parametrize(
    ("value", "dtype", "carried"),
    [
        (torch.tensor([1 + 2j, 3 - 4j], dtype=torch.complex64), "complex64", torch.float32),
        (torch.tensor([1 + 2j], dtype=torch.complex128), "complex128", torch.float64),
        (torch.tensor([1, 2], dtype=torch.uint16), "uint16", torch.int64),
        (torch.tensor([1, 2], dtype=torch.uint32), "uint32", torch.int64),
        (torch.tensor([1, 2], dtype=torch.uint64), "uint64", torch.int64),
        (torch.tensor([0.5, 1.0]).to(torch.float8_e4m3fn), "float8_e4m3fn", torch.float32),
        (torch.tensor([0.5, 1.0]), None, torch.float32),
        (torch.tensor([True]), None, torch.bool),
    ],
)
def test_leaves_travel(value: torch.Tensor, dtype: str | None, carried: torch.dtype, tmp_path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    node = encode((value,), "s0/o", tensors)
    leaf = node["items"][0]
    assert leaf.get("dtype") == dtype
    path = tmp_path / "o.safetensors"
    save_file(tensors, str(path))  # what used to fail for complex128
    back = load_file(str(path))[leaf["key"]]
    assert back.dtype == carried
    if value.is_complex():
        assert torch.equal(torch.view_as_complex(back), value)
    else:
        assert torch.equal(back, value.to(carried))


def test_sparse_leaves_travel_dense(tmp_path) -> None:
    value = torch.tensor([[0.0, 2.0], [3.0, 0.0]]).to_sparse()
    tensors: dict[str, torch.Tensor] = {}
    leaf = encode(value, "s0/o", tensors)
    assert leaf["dtype"] == "sparse_coo:float32"
    save_file(tensors, str(tmp_path / "o.safetensors"))
    assert torch.equal(tensors[leaf["key"]], value.to_dense())
