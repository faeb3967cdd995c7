"""Training states: parameters, buffers, optimizer state and step, copied or saved.

A state on disk is one safetensors file. Its tensors are named `model.<key>` and
`optimizer.<index>.<key>`; its `twophase` metadata entry is JSON with the step, the
optimizer's parameter groups and every non-tensor value. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from twophase.core.errors import StateError

FORMAT = "twophase-training-state"
FORMAT_VERSION = 1


@dataclass
class TrainingState:
    """Everything that determines a run's future: model state dict, optimizer state, step.

    The model state dict contains parameters and buffers (BatchNorm running statistics).
    The optimizer state dict is `torch.optim.Optimizer.state_dict()`, whose momentum
    buffers make a branch's first steps depend on the parent's history. `parameters`
    names the keys of `model` that are trainable parameters, in the model's order.
    """

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    parameters: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(cls, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, **metadata: Any) -> TrainingState:
        """Copy the current state of a live model and optimizer; the copy shares no tensor."""
        return cls(
            step=step,
            model=_clone_tree(model.state_dict()),
            optimizer=_clone_tree(optimizer.state_dict()),
            parameters=tuple(name for name, _ in model.named_parameters()),
            metadata=dict(metadata),
        )

    def clone(self) -> TrainingState:
        """Return a deep copy that shares no tensor with this state."""
        return TrainingState(
            step=self.step,
            model=_clone_tree(self.model),
            optimizer=_clone_tree(self.optimizer),
            parameters=self.parameters,
            metadata=json.loads(json.dumps(self.metadata)),
        )

    def parameter_vector(self) -> torch.Tensor:
        """Return the trainable parameters flattened into one float64 vector, in model order."""
        return torch.cat([self.model[name].detach().reshape(-1).to(torch.float64) for name in self.parameters])

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Load this state into a live model and optimizer without sharing tensors.

        `Optimizer.load_state_dict` keeps the tensors it is given when device and dtype
        already match. Loading this state's own dict would tie the optimizer's momentum
        buffers to this state, so a clone is loaded instead.
        """
        try:
            model.load_state_dict(self.model)
        except RuntimeError as error:
            raise StateError(f"state at step {self.step} does not fit the model: {_first_line(error)}") from None
        try:
            optimizer.load_state_dict(_clone_tree(self.optimizer))
        except (ValueError, KeyError) as error:
            raise StateError(f"state at step {self.step} does not fit the optimizer: {error}") from None

    def parameter_names(self) -> list[str]:
        return list(self.model)

    def save(self, path: Path) -> None:
        """Write the state to one safetensors file, atomically (temporary file, then rename)."""
        tensors: dict[str, torch.Tensor] = {}
        for key, tensor in self.model.items():
            tensors[f"model.{key}"] = _storable(tensor)
        optimizer_state: dict[str, dict[str, Any]] = {}
        for index, entries in self.optimizer["state"].items():
            scalars = {}
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer.{index}.{key}"] = _storable(value)
                else:
                    scalars[key] = value
            optimizer_state[str(index)] = scalars
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "step": self.step,
            "model_keys": list(self.model),
            "parameters": list(self.parameters),
            "optimizer_state": optimizer_state,
            "optimizer_param_groups": self.optimizer["param_groups"],
            "metadata": self.metadata,
        }

        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        try:
            save_file(tensors, str(temporary), metadata={"twophase": json.dumps(header)})
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            # A full disk leaves a partial temporary file; the previous file at `path` stays.
            temporary.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> TrainingState:
        """Read a state written by `save`; raise StateError if it is missing or damaged."""
        if not path.is_file():
            raise StateError(f"training state {str(path)!r} not found")
        try:
            tensors = load_file(str(path), device=str(device))
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})["twophase"])
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise StateError(f"training state {str(path)!r} is damaged or not a twophase state: {error}") from None
        if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
            raise StateError(
                f"training state {str(path)!r} has format {header.get('format')!r} version "
                f"{header.get('version')!r}; this twophase reads {FORMAT!r} version {FORMAT_VERSION}"
            )

        model = {key: tensors[f"model.{key}"] for key in header["model_keys"]}
        optimizer_state: dict[int, dict[str, Any]] = {}
        for index, scalars in header["optimizer_state"].items():
            entries = dict(scalars)
            prefix = f"optimizer.{index}."
            for name, tensor in tensors.items():
                if name.startswith(prefix):
                    entries[name[len(prefix):]] = tensor
            optimizer_state[int(index)] = entries
        optimizer = {"state": optimizer_state, "param_groups": header["optimizer_param_groups"]}
        return cls(
            step=int(header["step"]),
            model=model,
            optimizer=optimizer,
            parameters=tuple(header["parameters"]),
            metadata=header["metadata"],
        )


def is_readable_state(path: Path) -> bool:
    """Return True when `path` is a safetensors file with a twophase header and all its bytes.

    Reads only the header, which safetensors checks against the file's size. A missing or
    truncated file is therefore found, but changed bytes inside the tensors are not.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            return "twophase" in (handle.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return False


def state_file_name(step: int) -> str:
    """Return the file name of the state at `step`; zero-padded so names sort by step."""
    return f"step-{step:09d}.safetensors"


def step_of_state_file(path: Path) -> int | None:
    """Return the step encoded in a state file name, or None for other files."""
    name = path.name
    if not (name.startswith("step-") and name.endswith(".safetensors")):
        return None
    digits = name[len("step-") : -len(".safetensors")]
    return int(digits) if digits.isdigit() else None


def _storable(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors stores dense row-major data; channels-last weights are copied to it.
    return tensor.detach().contiguous()


def _clone_tree(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: _clone_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clone_tree(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_clone_tree(item) for item in value)
    return value


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
