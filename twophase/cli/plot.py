"""`twophase plot`: draw the figures of a chaos or cone store into OUT/figures."""

from __future__ import annotations

from pathlib import Path

from twophase.cli.console import console, handle_errors, setup_logging
from twophase.cli.show import OutArgument
from twophase.core.analysis import DEFAULT_TRANSITION_THRESHOLD, locate_store, open_results
from twophase.core.output import FIGURES_FOLDER
from twophase.plugins.plots import plot_chaos, plot_cone


@handle_errors
def plot_command(out: OutArgument) -> None:
    """Draw the figures of a chaos or cone store as PNG files in OUT/figures.

    Chaos: heatmaps of C, B and D over (t0, t1) and the final values against t0, with
    the transition threshold that the experiment recorded. Cone: S over all pairs,
    S(tau, t), S(t, t + dt) and the kernel embedding.
    """
    setup_logging(verbose=False)
    paths = draw_figures(out)
    for path in paths:
        console.print(str(path), highlight=False, soft_wrap=True)
    if not paths:
        console.print("no figures written: the store has none of the metrics that the figures show", highlight=False)


def draw_figures(out: Path) -> list[Path]:
    """Draw the figures of the store in `out` into `out/figures`; return their paths."""
    store = locate_store(out)
    dataset = open_results(store)
    if dataset.attrs.get("experiment") == "cone":
        return plot_cone(dataset, store.parent / FIGURES_FOLDER)
    threshold = float(dataset.attrs.get("transition_threshold", DEFAULT_TRANSITION_THRESHOLD))
    return plot_chaos(dataset, store.parent / FIGURES_FOLDER, threshold=threshold)
