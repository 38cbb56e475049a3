"""Models whose frozen or optimized TorchScript diverges from eager while the plain script does not.

`torch.jit.freeze` inlines parameters and attributes as constants and then rewrites the graph
(`run_frozen_optimizations`: conv/linear-batchnorm folding, conv-add/sub and conv-mul/div folding);
`torch.jit.optimize_for_inference` freezes (calling `.eval()` first) and rewrites further. Each class
is one example; its case file under cases/ says what the harness observes and why.
"""

import numpy as np
import torch


class TransductiveBatchNormMLP(torch.nn.Module):
    """MAML's non-convolutional network (Finn et al. 2017, section 5.2: hidden layers with batch
    normalization and ReLU, then a linear layer) written as MAML code writes it: the batch norm is
    `F.batch_norm(..., training=True)` on the module's running statistics, so it always normalizes
    with the statistics of the batch it is given ("transductive" batch norm; dragen1860/MAML-Pytorch
    `learner.py` calls `F.batch_norm(x, running_mean, running_var, weight=w, bias=b,
    training=bn_training)` with `bn_training=True` by default). The module itself is in eval mode.

    Freezing inlines the running statistics as constants (`aten::batch_norm`'s schema does not say
    it writes them) and `FoldFrozenLinearBatchnorm` folds them into the linear layer before it
    without looking at `training`: the frozen module normalizes with the running statistics.
    """

    def __init__(self, features=32, hidden=(64, 32), classes=5):
        super().__init__()
        sizes = [features, *hidden]
        self.linears = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.bns = torch.nn.ModuleList(torch.nn.BatchNorm1d(h) for h in hidden)
        self.head = torch.nn.Linear(sizes[-1], classes)
        # Running statistics as meta-training leaves them (on data unlike the test tasks'), set
        # directly: computing them with a forward pass would make the folded constants in the
        # frozen `.code` snapshot depend on how many threads reduced the batch statistics.
        with torch.no_grad():
            for bn in self.bns:
                bn.running_mean.copy_(torch.linspace(-0.5, 0.5, bn.num_features))
                bn.running_var.copy_(torch.linspace(0.5, 2.0, bn.num_features))

    def forward(self, x):
        for linear, bn in zip(self.linears, self.bns):
            x = torch.nn.functional.batch_norm(
                linear(x), bn.running_mean, bn.running_var, bn.weight, bn.bias, training=True
            )
            x = torch.relu(x)
        return self.head(x)


class DenormalizedColumn(torch.nn.Module):
    """A 1-D convolutional column model (inputs: a few variables on vertical levels) whose outputs
    are de-normalized by per-variable statistics computed with numpy, so held as float64 buffers
    of shape [1, C, 1]. Eager type promotion makes the output float64: float32 conv output times a
    float64 tensor with dimensions is float64.

    Freezing folds the multiply and the add into the last conv's weight and bias
    (`FoldFrozenConvMulOrDiv`, `FoldFrozenConvAddOrSub`) and casts the folded tensors back to the
    conv's dtype, so the frozen module returns float32.
    """

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv1d(4, 16, kernel_size=3, padding=1)
        self.head = torch.nn.Conv1d(16, 3, kernel_size=1)
        # Output statistics as a training script computes them: numpy, float64.
        mean = np.array([250.0, 5.0e-3, 5.0e4])  # temperature K, humidity kg/kg, pressure Pa
        std = np.array([15.0, 3.0e-3, 2.0e4])
        self.register_buffer("out_mean", torch.from_numpy(mean).view(1, -1, 1))
        self.register_buffer("out_std", torch.from_numpy(std).view(1, -1, 1))

    def forward(self, x):
        y = self.head(torch.relu(self.body(x)))
        return y * self.out_std + self.out_mean
