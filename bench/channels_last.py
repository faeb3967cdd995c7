"""Compare training-step time with and without the channels-last memory format.

Both settings train the same model on the same synthetic batches, alternating
in rounds so that machine load affects both alike. Prints seconds per step and
the ratio. Usage: python bench/channels_last.py [--model resnet20] [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from twophase.core.config import load_config
from twophase.core.plugins import create_hooks
from twophase.core.run import Run, build_model, build_optimizer, make_plan
from twophase.core.stream import DataStream
from twophase.core.training import load_data


def build_run(model_name: str, channels_last: bool, batch_size: int) -> tuple[Run, DataStream]:
    config = load_config(None, {
        "model.name": model_name,
        "data.name": "synthetic",
        "data.options": {"train_size": 4 * batch_size, "test_size": 16, "image_size": 32},
        "train.batch_size": batch_size,
        "train.length": "1000",
        "train.channels_last": channels_last,
    })
    hooks = create_hooks()
    data = load_data(config, hooks)
    device = torch.device("cpu")
    stream = DataStream(data, batch_size, 0, "flip-crop", device, channels_last)
    plan = make_plan(config, stream.steps_per_epoch, "flip-crop", device)
    model = build_model(hooks.registry, config, data, device)
    return Run(str(channels_last), config, plan, model, build_optimizer(model, config)), stream


def time_steps(run: Run, stream: DataStream, steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        run.train_on(stream.batch(run.step))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--steps", type=int, default=20, help="steps per round and setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    arguments = parser.parse_args()

    runs = {setting: build_run(arguments.model, setting, arguments.batch_size) for setting in (True, False)}
    for run, stream in runs.values():
        time_steps(run, stream, 2)  # warm-up: first steps allocate and pick kernels

    totals = {True: 0.0, False: 0.0}
    for _ in range(arguments.rounds):
        for setting, (run, stream) in runs.items():
            totals[setting] += time_steps(run, stream, arguments.steps)

    count = arguments.rounds * arguments.steps
    print(f"{arguments.model}, batch {arguments.batch_size}, {count} steps per setting, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"channels-last:     {totals[True] / count:.3f} s per step")
    print(f"contiguous (NCHW): {totals[False] / count:.3f} s per step")
    print(f"ratio NCHW / channels-last: {totals[False] / totals[True]:.2f}")


if __name__ == "__main__":
    main()
