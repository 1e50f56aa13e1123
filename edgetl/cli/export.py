"""`edgetl export` and `edgetl parity`."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, percent, table
from edgetl.export.formats import DEFAULT_PRECISIONS, FORMATS


@click.command(short_help="Export a run to ONNX, OpenVINO IR and TFLite (fp32, fp16, calibrated int8).")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "formats", default="all", show_default=True,
              help=f"Comma-separated formats: {', '.join(FORMATS)}, or all.")
@click.option("--precision", "precisions", default=",".join(DEFAULT_PRECISIONS), show_default=True,
              help="Comma-separated precisions: fp32, fp16, int8.")
@click.option("--calib-size", type=int, default=300, show_default=True,
              help="Class-balanced calibration images from the train split (int8).")
@click.option("--calib-data", type=click.Path(), help="A folder of calibration images instead of the train split.")
@click.option("--max-drop", type=float,
              help="Gate: int8 may lose at most this many percentage points of validation accuracy; "
                   "otherwise better quantization is tried, then fp16, then fp32.")
@click.option("--budget", type=float, default=600, show_default=True, help="Seconds of fallback attempts per artifact.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default RUN_DIR/export).")
@json_option
def export(run_dir, formats, precisions, calib_size, calib_data, max_drop, budget, out):
    """Export the best checkpoint of RUN_DIR; every artifact is measured against the float model.

    Each artifact lands in OUT/<format>-<precision>/ with model.json (labels, preprocessing,
    tensors, quantization, attempts, checksums, golden samples). Re-running skips artifacts
    whose sources did not change.
    """
    from edgetl.export import export_run
    from edgetl.export.formats import parse_list

    report = export_run(run_dir, parse_list(formats, list(FORMATS), "format"),
                        parse_list(precisions, ["fp32", "fp16", "int8"], "precision"),
                        calib_size=calib_size, calib_data=calib_data, max_drop=max_drop, out=out,
                        budget_seconds=budget)
    rows = report["artifacts"]
    table(f"export: {report['out']} (float validation accuracy {percent(report['float_val_accuracy'])})",
          ["Format", "Precision", "Delivered", "Status", "Size MB", "Seconds", "Val accuracy", "Drop pp", "Agreement"],
          [[r["format"], r["precision"], r["delivered"], r["status"], f"{r['size_bytes'] / 1e6:.2f}", r["seconds"],
            percent(r["val_accuracy"]), r["drop_pp"], percent(r["agreement"])] for r in rows])
    for row in rows:
        if row["message"]:
            click.echo(f"{row['format']}-{row['precision']}: {row['message']}", err=True)
    return {"out": report["out"], "float_val_accuracy": report["float_val_accuracy"], "artifacts": [
        {k: r[k] for k in ("format", "precision", "delivered", "path", "status", "size_bytes", "seconds",
                           "val_accuracy", "drop_pp", "agreement", "golden_passed", "attempts")} for r in rows]}


@click.command(short_help="Compare every artifact with the float model on held-out images; gate on the drop.")
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Held-out image folder (default: the run's test split).")
@click.option("--artifacts", multiple=True, type=click.Path(), help="Artifact folders or files (default: RUN_DIR/export/*).")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Fail (exit 1) when an artifact's top-1 drops more than this many percentage points.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Report folder (default RUN_DIR/parity).")
@click.option("--threads", type=int, help="Runtime threads.")
@json_option
def parity(run_dir, data, artifacts, max_drop, report_dir, threads):
    """Evaluate the float model and every artifact on the same held-out images.

    Per artifact: top-1 (and top-5), drop versus float, top-1 agreement, KL divergence, cosine
    similarity, the worst class, and the images whose prediction changed; a preprocessing or
    runtime mismatch (golden samples) is reported as such. Writes report.md, report.json and
    parity.png. Exit code 1 when an artifact fails.
    """
    from edgetl.parity import gate, run_parity
    from edgetl.parity.report import golden_cell

    result = run_parity(run_dir, data=data, artifacts=list(artifacts) or None, max_drop=max_drop,
                        report_dir=report_dir, threads=threads)
    table(f"parity on {result['images']} images ({result['source']}), float {percent(result['float']['accuracy'])}",
          ["Artifact", "Status", "Top-1", "Drop pp", "Agreement", "KL", "Worst class", "Golden"],
          [[f"{r['format']}-{r['precision']}", r["status"], percent(r.get("accuracy")), r.get("drop_pp"),
            percent(r.get("agreement")), r.get("kl"), r.get("worst_class"),
            golden_cell(r.get("golden"))]
           for r in result["artifacts"]])
    for row in result["artifacts"]:
        if row.get("detail") or row.get("error"):
            click.echo(f"{row['format']}-{row['precision']}: {row['status']}: {row.get('detail') or row.get('error')}",
                       err=True)
    summary = {"float": result["float"], "max_drop": max_drop, "passed": result["passed"],
               "report": result["report"], "artifacts": [
                   {k: r.get(k) for k in ("format", "precision", "path", "status", "accuracy", "drop_pp", "agreement",
                                          "kl", "cosine", "worst_class", "top5", "golden", "detail")}
                   for r in result["artifacts"]]}
    if not result["passed"]:
        from edgetl.console import emit_json

        ctx = click.get_current_context()
        if ctx.params.get("as_json"):
            emit_json(summary)
        gate(result)
    return summary
