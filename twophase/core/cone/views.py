"""Derived views of the cone experiment, computed from the kernel distances of all pairs.

S = 1 - cos(H_i, H_j) of two normalised kernels relates to their angle theta by
S = 1 - cos(theta) = 2 sin^2(theta / 2), so theta = 2 asin(sqrt(S / 2)), which keeps
its digits for small angles where acos(1 - S) would not.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from twophase.core.steps import Step

# A kernel distance curve S(t, t + dt) has reached its late-training level once it stays
# within this fraction of its drop from the peak above the late level.
LATE_LEVEL_MARGIN = 0.1
# The late level is the median of the last quarter of the curve's points.
LATE_FRACTION = 0.25


def angles_degrees(distance: np.ndarray) -> np.ndarray:
    """Convert kernel distances S to angles between the kernels, in degrees."""
    clipped = np.clip(distance, 0.0, 2.0)
    return np.degrees(2.0 * np.arcsin(np.sqrt(clipped / 2.0)))


def cone_half_angles(steps: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Return, for each reference step tau, the largest angle between H_tau and any later H_t.

    `distance[i, j]` is S between the kernels at steps[i] and steps[j]. The last step has
    no later kernel, so its half-angle is 0.
    """
    angles = angles_degrees(distance)
    result = np.zeros(len(steps))
    for index in range(len(steps)):
        later = angles[index, index:]
        finite = later[np.isfinite(later)]
        result[index] = finite.max() if finite.size else np.nan
    return result


def classical_mds(distance: np.ndarray, components: int = 2) -> np.ndarray:
    """Embed points with pairwise distances `distance` in `components` dimensions.

    Classical multidimensional scaling: double-centre the squared distances and keep the
    leading eigenvectors, scaled by the square roots of their eigenvalues. Negative
    eigenvalues (distances that are not Euclidean) give zero coordinates.
    """
    count = distance.shape[0]
    centring = np.eye(count) - np.full((count, count), 1.0 / count)
    gram = -0.5 * centring @ (distance**2) @ centring
    eigenvalues, eigenvectors = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:components]
    scales = np.sqrt(np.clip(eigenvalues[order], 0.0, None))
    embedding = eigenvectors[:, order] * scales
    if embedding.shape[1] < components:
        embedding = np.pad(embedding, ((0, 0), (0, components - embedding.shape[1])))
    # Eigenvectors have an arbitrary sign; fixing it makes embeddings comparable across runs.
    signs = np.where(embedding[0] < 0, -1.0, 1.0)
    return embedding * signs


def offset_distances(steps: np.ndarray, distance: np.ndarray, dt: int) -> np.ndarray:
    """Return S(t, t + dt) for every checkpoint t, NaN where t + dt is not a checkpoint."""
    index_of = {int(step): index for index, step in enumerate(steps)}
    result = np.full(len(steps), np.nan)
    for index, step in enumerate(steps):
        partner = index_of.get(int(step) + dt)
        if partner is not None:
            result[index] = distance[index, partner]
    return result


def kernel_transition(steps: np.ndarray, curve: np.ndarray) -> int | None:
    """Return the step where S(t, t + dt) drops to its late-training level, or None.

    The late level is the median of the last quarter of the curve's finite points. The
    transition is the earliest t from which the curve stays at or below the late level
    plus LATE_LEVEL_MARGIN times the drop from the curve's peak to the late level.
    Returns None when the curve has fewer than four finite points.
    """
    finite = np.isfinite(curve)
    points, values = steps[finite], curve[finite]
    if len(values) < 4:
        return None
    tail = max(1, int(round(LATE_FRACTION * len(values))))
    late = float(np.median(values[-tail:]))
    limit = late + LATE_LEVEL_MARGIN * (float(values.max()) - late)
    above = np.nonzero(values > limit)[0]
    if above.size == 0:
        return int(points[0])
    first_settled = above[-1] + 1
    return int(points[first_settled]) if first_settled < len(points) else None


# Views on an opened cone store (an xarray Dataset) for notebooks, show and plot.

KERNEL_DISTANCE = "kernel_distance"


def kernel_distances(dataset: xr.Dataset) -> xr.DataArray:
    """Return S(tau, t) over all pairs of checkpoints, indexed by t0 = tau and t1 = t."""
    return dataset["values"].sel(metric=KERNEL_DISTANCE, drop=True)


def distance_from(dataset: xr.Dataset, tau: int) -> xr.DataArray:
    """Return S(tau, t) against t for t >= tau."""
    row = kernel_distances(dataset).sel(t0=tau, drop=True)
    return row.where(row.t1 >= tau, drop=True)


def offset_curve(dataset: xr.Dataset, dt: int) -> xr.DataArray:
    """Return S(t, t + dt) against t, only where t + dt is a checkpoint."""
    return dataset["offset_distance"].sel(dt=dt, drop=True).dropna("t1")


def kernel_transition_step(dataset: xr.Dataset, dt: int) -> int | None:
    """Return the step where S(t, t + dt) drops to its late-training level (see `kernel_transition`)."""
    curve = offset_curve(dataset, dt)
    return kernel_transition(curve.t1.values, curve.values)


def default_taus(dataset: xr.Dataset, count: int = 5) -> list[int]:
    """Return the configured taus that are checkpoints, else `count` checkpoints spread over the grid."""
    steps = [int(step) for step in dataset.t0.values]
    config = json.loads(dataset.attrs.get("config", "{}"))
    configured = config.get("cone", {}).get("taus", [])
    steps_per_epoch = int(dataset.attrs.get("steps_per_epoch", 1))
    chosen = [Step.parse(tau).resolve(steps_per_epoch, steps[-1]) for tau in configured]
    chosen = [tau for tau in chosen if tau in steps]
    if chosen:
        return chosen
    candidates = steps[:-1] or steps
    picks = np.unique(np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int))
    return [candidates[index] for index in picks]
