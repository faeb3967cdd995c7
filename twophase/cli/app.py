"""The `twophase` command-line application."""

from __future__ import annotations

import typer

from twophase import __version__
from twophase.cli.chaos import chaos_command
from twophase.cli.cone import cone_command
from twophase.cli.demo import demo_command
from twophase.cli.plot import plot_command
from twophase.cli.plugins import plugins_command
from twophase.cli.show import show_command
from twophase.cli.train import train_command

app = typer.Typer(
    name="twophase",
    help="Measure the chaotic and the stable phase of neural-network training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("train")(train_command)
app.command("chaos")(chaos_command)
app.command("cone")(cone_command)
app.command("demo")(demo_command)
app.command("plugins")(plugins_command)
app.command("show")(show_command)
app.command("plot")(plot_command)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"twophase {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Measure the chaotic and the stable phase of neural-network training."""


def main() -> None:
    """Run the CLI; the console-script entry point."""
    app()
