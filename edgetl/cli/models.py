"""`edgetl models`: the backbone registry as a table."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, table


@click.command(short_help="List backbones: input size, parameters, MACs, offline weights.")
@click.option("--no-size", is_flag=True, help="Skip building each network to count parameters and MACs (faster).")
@json_option
def models(no_size):
    """List backbones (one YAML recipe each in models/): input size, size, MACs, offline weights."""
    from edgetl.backbones import get_spec, list_models
    from edgetl.backbones.weights import available_offline

    rows = []
    for name in list_models():
        spec = get_spec(name)
        entry = {"name": name, "input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std),
                 "strategy": spec.recommended.strategy, "weights_offline": available_offline(spec),
                 "description": spec.description}
        if not no_size:
            from edgetl.backbones.profile import describe

            entry.update(describe(spec))
        rows.append(entry)
    table("backbones", ["name", "input", "params (M)", "MACs (M)", "weights offline"], [
        [r["name"], r["input_size"], f"{r['parameters'] / 1e6:.2f}" if "parameters" in r else None,
         f"{r['macs'] / 1e6:.0f}" if "macs" in r else None, r["weights_offline"] or "no (download)"]
        for r in rows
    ])
    return {"models": rows}
