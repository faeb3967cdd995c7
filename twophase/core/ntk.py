"""The empirical neural tangent kernel (eNTK) of a network state, built on torch.func.

For inputs x_1..x_n and outputs f(x) in R^c, J contains the per-example Jacobians of the
outputs with respect to the trainable parameters, and H = J J^T. Kinds:

- `trace`: n x n, H[i, j] = sum over logits k of <J[i, k], J[j, k]>;
- `full`: nc x nc, H[(k, i), (l, j)] = <J[i, k], J[j, l]>, class-major, so that the
  k-th diagonal n x n block is logit k's kernel and the blocks sum to `trace`;
- `logit-sum`: n x n, the kernel of the summed logits, H[i, j] = <g_i, g_j> with
  g_i = sum over k of J[i, k].

Jacobians are computed for chunks of examples (`torch.func.vmap` over `jacrev`) and
their products accumulate in float64, whatever the model's dtype.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from twophase.core.config import NTK_KINDS as KINDS
from twophase.core.errors import UsageError

logger = logging.getLogger(__name__)

__all__ = ["KINDS", "NtkPlan", "empirical_ntk", "plan_ntk"]


@dataclass(frozen=True)
class NtkPlan:
    """The split of an eNTK computation into chunks of examples under a memory budget."""

    kind: str
    samples: int
    outputs: int
    parameters: int
    chunk: int
    kernel_bytes: int
    jacobian_bytes_per_example: int

    @property
    def chunks(self) -> int:
        return math.ceil(self.samples / self.chunk)

    @property
    def peak_bytes(self) -> int:
        """Estimated peak memory: the kernel plus two chunks of Jacobians in float64."""
        return self.kernel_bytes + 2 * self.chunk * self.jacobian_bytes_per_example


def plan_ntk(kind: str, samples: int, outputs: int, parameters: int, memory_bytes: int) -> NtkPlan:
    """Choose the largest chunk of examples whose Jacobians fit the budget, or raise UsageError.

    The estimate counts the kernel in float64 and two chunks of Jacobians in float64;
    activations of the forward pass come on top and are not counted.
    """
    if kind not in KINDS:
        raise UsageError(f"invalid eNTK kind {kind!r}: use one of {', '.join(KINDS)}")
    rows = samples * outputs if kind == "full" else samples
    kernel_bytes = rows * rows * 8
    per_example = (1 if kind == "logit-sum" else outputs) * parameters * 8
    free = memory_bytes - kernel_bytes
    chunk = min(samples, free // (2 * per_example)) if free > 0 else 0
    needed = kernel_bytes + 2 * per_example
    if chunk < 1:
        raise UsageError(
            f"the eNTK ({kind}, {samples} samples, {outputs} outputs, {parameters:,} parameters) needs at least "
            f"{needed / 2**20:,.0f} MiB, over the budget of {memory_bytes / 2**20:,.0f} MiB; lower --ntk-samples, "
            f"use --ntk-kind trace or logit-sum, or raise --ntk-memory"
        )
    return NtkPlan(kind, samples, outputs, parameters, int(chunk), kernel_bytes, per_example)


def empirical_ntk(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    parameter_names: tuple[str, ...],
    inputs: torch.Tensor,
    plan: NtkPlan,
) -> torch.Tensor:
    """Compute the eNTK of `model` with the state `tensors` on `inputs`, in float64.

    The model runs in eval mode, so BatchNorm uses its running statistics. `tensors`
    contains parameters and buffers as in a state dict. Returns an (n, n) or, for `full`,
    an (nc, nc) matrix.
    """
    model.eval()
    parameters = {name: tensors[name] for name in parameter_names}
    buffers = {name: tensor for name, tensor in tensors.items() if name not in parameters}
    summed = plan.kind == "logit-sum"

    def outputs(params: dict[str, torch.Tensor], example: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (params, buffers), (example.unsqueeze(0),)).squeeze(0)
        return logits.sum() if summed else logits

    jacobian = vmap(jacrev(outputs), in_dims=(None, 0))

    def chunk_jacobian(start: int) -> torch.Tensor:
        block = jacobian(parameters, inputs[start : start + plan.chunk])
        count = min(plan.chunk, inputs.shape[0] - start)
        shape = (count, -1) if summed else (count, plan.outputs, -1)
        return torch.cat([block[name].reshape(shape) for name in parameter_names], dim=-1).to(torch.float64)

    samples = inputs.shape[0]
    rows = samples * plan.outputs if plan.kind == "full" else samples
    kernel = torch.zeros(rows, rows, dtype=torch.float64, device=inputs.device)
    starts = list(range(0, samples, plan.chunk))
    with _without_tf32():
        # Each chunk's Jacobian is computed once for the diagonal block and again for
        # every later chunk it pairs with, unless everything fits in one chunk.
        for first_index, first in enumerate(starts):
            left = chunk_jacobian(first)
            for second in starts[first_index:]:
                right = left if second == first else chunk_jacobian(second)
                _accumulate(kernel, left, right, first, second, plan)
    return kernel


@contextmanager
def _without_tf32() -> Iterator[None]:
    """Turn TF32 off on CUDA for the block, whatever the run's determinism setting.

    TF32 rounds matrix-product inputs to 10 mantissa bits, far coarser than the kernel
    distances between late checkpoints that the cone experiment resolves.
    """
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def _accumulate(kernel: torch.Tensor, left: torch.Tensor, right: torch.Tensor, first: int, second: int, plan: NtkPlan) -> None:
    """Write the block of examples (first.., second..) and its mirror into the kernel."""
    size_left, size_right = left.shape[0], right.shape[0]
    rows, columns = slice(first, first + size_left), slice(second, second + size_right)
    if plan.kind == "logit-sum":
        block = left @ right.T
    elif plan.kind == "trace":
        block = torch.einsum("ikp,jkp->ij", left, right)
    else:
        # One product over all logit pairs: rows and columns ordered (logit, example).
        outputs, samples = plan.outputs, plan.samples
        left_rows = left.transpose(0, 1).reshape(outputs * size_left, -1)
        right_rows = right.transpose(0, 1).reshape(outputs * size_right, -1)
        block = (left_rows @ right_rows.T).view(outputs, size_left, outputs, size_right)
        blocks = kernel.view(outputs, samples, outputs, samples)
        blocks[:, rows, :, columns] = block
        blocks[:, columns, :, rows] = block.permute(2, 3, 0, 1)
        return
    kernel[rows, columns] = block
    kernel[columns, rows] = block.T
