"""`edgetl demo` (the whole chain on embedded data) and `edgetl demo-data`."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, max_drop_option


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
@click.option("--epochs", type=int, default=3, show_default=True, help="Fine-tuning epochs.")
@max_drop_option("The int8 gate and the parity bound, in percentage points of top-1.", none_means="no gate")
@json_option
def demo(out, epochs, max_drop):
    """Run the pipeline end to end on embedded data (CPU, a few minutes).

    Real handwritten digits -> finetune EfficientNet-Lite0 -> export ONNX, OpenVINO and TFLite
    in fp32 and gated int8 -> parity of every artifact against the float model -> bench of every
    artifact -> the device runtime over the held-out images -> a local deploy with self-test.
    """
    from edgetl.cli.common import percent, table
    from edgetl.console import info
    from edgetl.demo import run_demo

    result = run_demo(out, epochs=epochs, max_drop=max_drop)
    tune = result["finetune"]
    rows = {str(r["path"]): r for r in result["parity"]["artifacts"]}
    bench = {m["path"]: m for m in result["bench"]["models"]}
    table(f"demo: {tune['model']} on digits, float test accuracy {percent(tune['test_accuracy'])}",
          ["Format", "Precision", "Delivered", "Size MB", "Export s", "Val drop pp", "Test top-1", "Test drop pp",
           "Agreement", "Parity", "p50 ms", "p99 ms"],
          [[r["format"], r["precision"], r["delivered"], f"{r['size_bytes'] / 1e6:.2f}", r["seconds"], r["drop_pp"],
            percent(rows.get(str(r["path"]), {}).get("accuracy")),
            rows.get(str(r["path"]), {}).get("drop_pp"),
            percent(rows.get(str(r["path"]), {}).get("agreement")),
            rows.get(str(r["path"]), {}).get("status"), _bench(bench, r, "p50_ms"), _bench(bench, r, "p99_ms")]
           for r in result["export"]])
    run = result["run"]
    info(f"edgetl run over {run['frames']} held-out images with {run['model']}: accuracy {percent(run['accuracy'])}, "
         f"{run['fps']} FPS end to end; figures: "
         + ", ".join([result['parity']['report']['png'], *result['bench']['figures'].values()]))
    deployed = result["deploy"]
    bench = deployed["bench"] or {}
    info(f"deployed release {deployed['release']} to {deployed['path']}: self-test "
         f"{'passed' if deployed['self_test']['passed'] else 'FAILED'} (golden {deployed['self_test']['golden']['matched']}"
         f"/{deployed['self_test']['golden']['total']}, accuracy {percent(deployed['accuracy'])}), on-device p50 "
         f"{bench.get('p50_ms')} ms, p99 {bench.get('p99_ms')} ms")
    return result


def _bench(bench: dict, row: dict, key: str):
    for path, model in bench.items():
        if row["path"] and path.startswith(str(row["path"])):
            return model[key]
    return None
