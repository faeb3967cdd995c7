"""The empirical NTK: analytic kernels, brute force, kinds and the memory budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from twophase.core.errors import UsageError
from twophase.core.ntk import KINDS, empirical_ntk, plan_ntk

GIB = 2**30


def parameter_names(model: nn.Module) -> tuple[str, ...]:
    return tuple(name for name, _ in model.named_parameters())


def kernel(model: nn.Module, inputs: torch.Tensor, kind: str, memory: int = GIB) -> torch.Tensor:
    outputs = int(model(inputs[:1]).shape[1])
    count = sum(p.numel() for p in model.parameters())
    plan = plan_ntk(kind, inputs.shape[0], outputs, count, memory)
    return empirical_ntk(model, dict(model.state_dict()), parameter_names(model), inputs, plan)


def batchnorm_mlp() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).double()
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 4, dtype=torch.float64))  # running statistics of their own
    model.eval()
    return model


def brute_force(model: nn.Module, inputs: torch.Tensor, kind: str) -> torch.Tensor:
    """Build the kernel from one torch.autograd.grad call per example and logit."""
    parameters = list(model.parameters())
    rows = []
    for example in inputs:
        logits = model(example.unsqueeze(0)).squeeze(0)
        if kind == "logit-sum":
            grads = torch.autograd.grad(logits.sum(), parameters)
            rows.append(torch.cat([g.reshape(-1) for g in grads]).unsqueeze(0))
            continue
        per_logit = []
        for k in range(logits.shape[0]):
            grads = torch.autograd.grad(logits[k], parameters, retain_graph=True)
            per_logit.append(torch.cat([g.reshape(-1) for g in grads]))
        rows.append(torch.stack(per_logit))
    jacobian = torch.stack(rows) if kind != "logit-sum" else torch.cat(rows)
    if kind == "logit-sum":
        return jacobian @ jacobian.T
    if kind == "trace":
        return torch.einsum("ikp,jkp->ij", jacobian, jacobian)
    class_major = jacobian.transpose(0, 1).reshape(-1, jacobian.shape[-1])
    return class_major @ class_major.T


def test_linear_trace_is_gram() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(9, 5, dtype=torch.float64)
    model = nn.Linear(5, 4, bias=False).double()
    expected = 4 * inputs @ inputs.T
    assert torch.allclose(kernel(model, inputs, "trace"), expected, rtol=0, atol=1e-10)


def test_linear_full_is_block_diagonal() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(9, 5, dtype=torch.float64)
    model = nn.Linear(5, 4).double()
    gram = inputs @ inputs.T + 1.0  # the bias adds 1 to every inner product
    expected = torch.kron(torch.eye(4, dtype=torch.float64), gram)
    assert torch.allclose(kernel(model, inputs, "full"), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_batchnorm_mlp_matches_brute_force(kind: str) -> None:
    model = batchnorm_mlp()
    inputs = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = brute_force(model, inputs, kind)
    assert torch.allclose(kernel(model, inputs, kind), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_equals_whole(kind: str) -> None:
    model = batchnorm_mlp()
    inputs = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whole = kernel(model, inputs, kind)
    count = sum(p.numel() for p in model.parameters())
    per_example = (1 if kind == "logit-sum" else 3) * count * 8
    small = whole.numel() * 8 + 2 * 2 * per_example  # two examples per chunk
    assert plan_ntk(kind, 7, 3, count, small).chunk == 2
    assert torch.allclose(kernel(model, inputs, kind, memory=small), whole, rtol=0, atol=1e-12)


def test_trace_is_sum_of_diagonal_blocks() -> None:
    model = batchnorm_mlp()
    inputs = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    full = kernel(model, inputs, "full").view(3, 6, 3, 6)
    diagonal_sum = sum(full[k, :, k, :] for k in range(3))
    assert torch.allclose(kernel(model, inputs, "trace"), diagonal_sum, rtol=0, atol=1e-12)


def test_kernel_is_float64_for_float32_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    result = kernel(model, torch.randn(3, 4), "trace")
    assert result.dtype == torch.float64
    assert torch.allclose(result, result.T)


def test_budget_too_small_rejected() -> None:
    # The full kernel of 5,000 rows takes 191 MiB and two one-example Jacobians 42 MiB.
    with pytest.raises(UsageError, match=r"needs at least 232 MiB, over the budget of 100 MiB; lower --ntk-samples"):
        plan_ntk("full", 500, 10, 272_474, 100 * 2**20)


def test_unknown_kind_rejected() -> None:
    with pytest.raises(UsageError, match="invalid eNTK kind 'diag'"):
        plan_ntk("diag", 10, 3, 100, GIB)
