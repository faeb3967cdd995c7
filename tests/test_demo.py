"""`twophase demo`: the README's main command shows the transition on the bundled digits."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from typer.testing import CliRunner

from twophase.cli.app import app


def test_demo_shows_transition(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "transition step:" in result.output
    assert len(list((tmp_path / "figures").glob("*.png"))) == 4

    with xr.open_zarr(tmp_path / "results.zarr") as results:
        cosine = results["values"].sel(metric="param_cosine").isel(t1=-1)
        assert float(cosine.isel(t0=0)) / float(cosine.isel(t0=-1)) > 1e6
        assert float(results.test_accuracy.isel(t1=-1)) > 0.9
        assert (results.control.isel(t1=-1).values == 0.0).all()
        # Measured here: 144. The bounds leave room for other CPUs' rounding, which moves
        # the chaotic twins' values but not the phase they belong to.
        assert 12 < results.attrs["transition_step"] <= 500
