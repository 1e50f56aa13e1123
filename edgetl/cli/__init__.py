"""The `edgetl` command line: thin commands over the library.

Each command parses its options, calls one library function and renders the
result; heavy imports happen inside the commands, so `edgetl --help` is instant
and the device commands never load torch. Errors from the library become one
line (plus a hint) and an exit code; `--debug` shows the traceback.
"""

from __future__ import annotations

import sys

import click

from edgetl import __version__
from edgetl.errors import EdgetlError

_debug = False


class EdgetlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # pipeline order, not alphabetical


@click.group(cls=EdgetlGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="edgetl")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """edgetl: from a folder of labelled photos to a measured classifier on an edge device.

    \b
    Pipeline:  finetune -> export -> parity -> run / bench -> deploy
    Try it:    edgetl demo
    """
    global _debug
    _debug = debug


def _register() -> None:
    from edgetl.cli import bench, demo, deploy, devices, export, keys, models, run, status, train

    cli.add_command(train.finetune)
    cli.add_command(export.export)
    cli.add_command(export.parity)
    cli.add_command(run.run)
    cli.add_command(bench.bench)
    cli.add_command(deploy.deploy)
    cli.add_command(status.status)
    cli.add_command(deploy.selftest)
    cli.add_command(deploy.install)
    cli.add_command(deploy.activate)
    cli.add_command(keys.keys)
    cli.add_command(models.models)
    cli.add_command(devices.devices)
    cli.add_command(demo.demo)
    cli.add_command(demo.demo_data)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="edgetl", standalone_mode=False)
    except EdgetlError as exc:
        if _debug:
            import traceback

            traceback.print_exc()
        from edgetl.console import printable_lines  # a device's or a file's words may be in it

        click.echo(f"error: {printable_lines(exc.message)}", err=True)
        if exc.hint:
            click.echo(f"  hint: {printable_lines(exc.hint)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(0)
