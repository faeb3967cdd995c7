"""`twophase demo`: the README's main command shows both effects on the bundled digits."""

from __future__ import annotations

from pathlib import Path

import xarray as xr


def test_demo_shows_both_experiments(demo_folder: Path) -> None:
    tmp_path = demo_folder
    output = (demo_folder / "demo-output.txt").read_text(encoding="utf-8")
    assert "transition step:" in output
    assert "cone half-angle" in output
    assert len(list((tmp_path / "chaos" / "figures").glob("*.png"))) == 4
    assert len(list((tmp_path / "cone" / "figures").glob("*.png"))) == 4

    with xr.open_zarr(tmp_path / "chaos" / "results.zarr") as chaos:
        cosine = chaos["values"].sel(metric="param_cosine").isel(t1=-1)
        assert float(cosine.isel(t0=0)) / float(cosine.isel(t0=-1)) > 1e6
        assert float(chaos.test_accuracy.isel(t1=-1)) > 0.9
        assert (chaos.control.isel(t1=-1).values == 0.0).all()
        # Measured here: 144. The bounds leave room for other CPUs' rounding, which moves
        # the chaotic twins' values but not the phase they belong to.
        assert 12 < chaos.attrs["transition_step"] <= 500

    with xr.open_zarr(tmp_path / "cone" / "results.zarr") as cone:
        half_angles = cone.cone_half_angle.values
        # The cone narrows: the kernel moves less after a late tau than after an early one.
        assert half_angles[0] > 2 * half_angles[-2]
