"""Models from the TorchScript tutorial material this project starts from.

Each class is one example; the case files under cases/ say what tracing and scripting do to it.
"""

import torch


class MyCell(torch.nn.Module):
    """The tutorial's recurrent cell: tanh(linear(x) + h), returned twice."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x, h):
        new_h = torch.tanh(self.linear(x) + h)
        return new_h, new_h


class MyDecisionGate(torch.nn.Module):
    """A data-dependent branch: tracing records the branch taken by the trace input."""

    def forward(self, x):
        if x.sum() > 0:
            return x
        else:
            return -x


class Classifier(torch.nn.Module):
    """Two linear layers and a sigmoid over the last dimension of a [B, 320, 320] input."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(320, 160)
        self.fc2 = torch.nn.Linear(160, 2)

    def forward(self, x):
        return torch.sigmoid(self.fc2(self.fc1(x)))


class ArangeShape(torch.nn.Module):
    """torch.arange(x.shape[0]): the tracer records aten::size, so the trace stays dynamic."""

    def forward(self, x):
        return torch.arange(x.shape[0])


class ArangeLen(torch.nn.Module):
    """torch.arange(len(x)): len() returns a Python int, frozen into the trace as a constant."""

    def forward(self, x):
        return torch.arange(len(x))


class ItemScale(torch.nn.Module):
    """.item() turns a tensor into a Python number, which the trace freezes."""

    def forward(self, x):
        scale = x.abs().max().item()
        return x / scale


class DeviceFactory(torch.nn.Module):
    """A tensor built with device=x.device: tracing records the trace-time device."""

    def forward(self, x):
        ones = torch.ones(x.shape[0], 1, device=x.device)
        return torch.cat([x, ones], dim=1)
