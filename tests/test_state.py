"""Training states: copies share nothing, files round-trip bitwise without pickle."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from twophase.core.errors import StateError
from twophase.core.state import TrainingState, state_file_name, step_of_state_file


def trained_pair(steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small BatchNorm network with momentum buffers after a few SGD steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    inputs, targets = torch.randn(8, 6), torch.randint(0, 3, (8,))
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model, optimizer


def momentum_buffers(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [optimizer.state[p]["momentum_buffer"] for group in optimizer.param_groups for p in group["params"]]


def test_capture_shares_no_tensor() -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer)
    live = {t.data_ptr() for t in model.state_dict().values()} | {t.data_ptr() for t in momentum_buffers(optimizer)}
    copied = {t.data_ptr() for t in state.model.values()}
    copied |= {entry["momentum_buffer"].data_ptr() for entry in state.optimizer["state"].values()}
    assert live.isdisjoint(copied)


def test_clone_shares_no_tensor() -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer)
    copy = state.clone()
    copy.model["0.weight"].add_(1.0)
    copy.optimizer["state"][0]["momentum_buffer"].add_(1.0)
    assert not torch.equal(copy.model["0.weight"], state.model["0.weight"])
    assert not torch.equal(copy.optimizer["state"][0]["momentum_buffer"], state.optimizer["state"][0]["momentum_buffer"])


def test_restore_does_not_tie_momentum_to_state() -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer)
    before = state.optimizer["state"][0]["momentum_buffer"].clone()
    twin, twin_optimizer = trained_pair(steps=0)
    state.restore(twin, twin_optimizer)
    momentum_buffers(twin_optimizer)[0].add_(1.0)
    assert torch.equal(state.optimizer["state"][0]["momentum_buffer"], before)


def test_save_load_round_trip_is_bitwise(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer, run="train")
    path = tmp_path / state_file_name(3)
    state.save(path)
    loaded = TrainingState.load(path)
    assert loaded.step == 3
    assert loaded.metadata == {"run": "train"}
    assert loaded.model.keys() == state.model.keys()
    for key, tensor in state.model.items():
        assert torch.equal(loaded.model[key], tensor), key
    assert loaded.optimizer["param_groups"] == state.optimizer["param_groups"]
    for index, entry in state.optimizer["state"].items():
        assert torch.equal(loaded.optimizer["state"][index]["momentum_buffer"], entry["momentum_buffer"])


def test_loaded_state_restores_training(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    path = tmp_path / "state.safetensors"
    TrainingState.capture(3, model, optimizer).save(path)
    twin, twin_optimizer = trained_pair(steps=0)
    TrainingState.load(path).restore(twin, twin_optimizer)
    for a, b in zip(momentum_buffers(optimizer), momentum_buffers(twin_optimizer), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(model[1].running_var, twin[1].running_var)


def test_file_is_safetensors_without_pickle(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    path = tmp_path / "state.safetensors"
    TrainingState.capture(3, model, optimizer).save(path)
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{"
    assert b"twophase-training-state" in raw[8 : 8 + header_size]
    assert not raw.startswith(b"PK")  # torch.save writes zip archives of pickles


def test_save_leaves_no_temporary_file(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    TrainingState.capture(3, model, optimizer).save(tmp_path / "state.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["state.safetensors"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not found"):
        TrainingState.load(tmp_path / "absent.safetensors")


def test_load_truncated_file(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    path = tmp_path / "state.safetensors"
    TrainingState.capture(3, model, optimizer).save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StateError, match="damaged"):
        TrainingState.load(path)


def test_restore_rejects_other_model() -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer)
    other = nn.Linear(6, 3)
    with pytest.raises(StateError, match="does not fit the model"):
        state.restore(other, torch.optim.SGD(other.parameters(), lr=0.1))


def test_state_file_names_sort_by_step() -> None:
    names = [state_file_name(step) for step in (5, 40, 300)]
    assert names == sorted(names)
    assert [step_of_state_file(Path(name)) for name in names] == [5, 40, 300]
    assert step_of_state_file(Path("notes.txt")) is None


def test_parameters_exclude_buffers(tmp_path: Path) -> None:
    model, optimizer = trained_pair()
    state = TrainingState.capture(3, model, optimizer)
    assert state.parameters == ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
    path = tmp_path / "state.safetensors"
    state.save(path)
    assert TrainingState.load(path).parameters == state.parameters


def test_parameter_vector_is_float64() -> None:
    model, optimizer = trained_pair()
    vector = TrainingState.capture(3, model, optimizer).parameter_vector()
    assert vector.dtype == torch.float64
    assert vector.numel() == sum(p.numel() for p in model.parameters())
