"""`edgetl demo` (the whole chain on embedded data) and `edgetl demo-data`."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option


@click.command("demo-data", short_help="Write a small real dataset (handwritten digits) to a folder.")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--per-class", type=int, default=180, show_default=True, help="Images per digit (at most ~180).")
@click.option("--size", type=int, default=64, show_default=True, help="Image side in pixels.")
@json_option
def demo_data(out, per_class, size):
    """Write a small real image-folder dataset (scikit-learn's handwritten digits) to OUT."""
    from edgetl.console import info
    from edgetl.data.demo import write_demo_data

    result = write_demo_data(out, per_class=per_class, size=size)
    info(f"wrote {result['images']} images in {len(result['classes'])} class folders to {result['path']}")
    return result


@click.command(short_help="Run the whole pipeline on embedded demo data.")
@click.option("--out", type=click.Path(file_okay=False), default="demo", show_default=True,
              help="Folder for the demo data and run.")
@click.option("--epochs", type=int, default=3, show_default=True)
@json_option
def demo(out, epochs):
    """Run the pipeline end to end on embedded data: demo data -> finetune (CPU, a few minutes)."""
    from edgetl.demo import run_demo

    return run_demo(out, epochs=epochs)
