"""`edgetl export` and `edgetl parity`."""

from __future__ import annotations

import click

from edgetl.cli.common import fail, json_option, max_drop_option, percent, table, threads_option
from edgetl.console import printable
from edgetl.contract.formats import DEFAULT_PRECISIONS, FORMATS
from edgetl.export import gate


@click.command(short_help="Export a run to ONNX, OpenVINO IR and TFLite (fp32, fp16, calibrated int8).")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "formats", default="all", show_default=True,
              help=f"Comma-separated formats: {', '.join(FORMATS)}, or all.")
@click.option("--precision", "precisions", default=",".join(DEFAULT_PRECISIONS), show_default=True,
              help="Comma-separated precisions: fp32, fp16, int8.")
@click.option("--calib-size", type=int, default=300, show_default=True,
              help="Class-balanced calibration images from the train split (int8).")
@click.option("--calib-data", type=click.Path(), help="A folder of calibration images instead of the train split.")
@max_drop_option("Gate: int8 may lose at most this many percentage points of validation top-1 (and must agree "
                 "with float on --min-agreement of the images); otherwise other calibrations, then the most "
                 "sensitive layers in float, then fp16, then fp32 are tried.", default=gate.DEFAULT_MAX_DROP,
                 none_means="the gate is off")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=gate.DEFAULT_MIN_AGREEMENT, show_default=True,
              help="Gate: the fraction of validation images whose int8 top-1 must equal the float top-1.")
@click.option("--budget", type=float, default=600, show_default=True, help="Seconds of gate attempts per artifact.")
@click.option("--qat/--no-qat", "qat", default=None,
              help="int8 from quantization-aware fine-tuning (--qat), or never (--no-qat). Default: the gate "
                   "tries QAT after post-training int8 misses, before fp16. Trained once per run in RUN_DIR/qat/.")
@click.option("--qat-epochs", type=click.IntRange(1), default=4, show_default=True, help="QAT epochs.")
@click.option("--qat-lr", type=click.FloatRange(0, min_open=True), default=1e-4, show_default=True,
              help="QAT learning rate (every layer but the classifier head, which stays the float model's).")
@click.option("--speed-gate/--no-speed-gate", default=True, show_default=True,
              help="Gate: an int8 attempt that runs slower than the same format's fp32 on this host misses. "
                   "--no-speed-gate keeps int8 regardless (the ratio is still measured and recorded).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default RUN_DIR/export).")
@json_option
def export(run_dir, formats, precisions, calib_size, calib_data, max_drop, min_agreement, budget, qat, qat_epochs,
           qat_lr, speed_gate, out):
    """Export the best checkpoint of RUN_DIR; every artifact is measured against the float model.

    Each artifact lands in OUT/<format>-<precision>/ with model.json (labels, preprocessing,
    tensors, quantization, attempts, checksums, golden samples). Re-running skips artifacts
    whose sources did not change. Exit code 1 when a requested artifact could not be made at all.
    """
    from edgetl.contract.formats import PRECISIONS, parse_list
    from edgetl.export import ExportSettings, export_run
    from edgetl.export.qat.settings import QatSettings

    settings = ExportSettings(calib_size=calib_size, calib_data=calib_data, max_drop=max_drop,
                              min_agreement=min_agreement, budget_seconds=budget,
                              qat={None: "auto", True: "force", False: "off"}[qat],
                              qat_settings=QatSettings(epochs=qat_epochs, lr=qat_lr), speed_gate=speed_gate)
    report = export_run(run_dir, parse_list(formats, list(FORMATS), "format"),
                        parse_list(precisions, PRECISIONS, "precision"), settings, out=out)
    rows = report["artifacts"]
    table(f"export: {report['out']} (float validation accuracy {percent(report['float_val_accuracy'])})",
          ["Format", "Precision", "Delivered", "Status", "Size MB", "Seconds", "Val accuracy", "Drop pp", "Agreement",
           "Float layers", "p50 ms", "vs fp32"],
          [[r["format"], r["precision"], r["delivered"], r["status"], f"{r['size_bytes'] / 1e6:.2f}", r["seconds"],
            percent(r["val_accuracy"]), r["drop_pp"], percent(r["agreement"]), len(r.get("float_layers") or []),
            r.get("latency_ms"), r.get("latency_ratio")] for r in rows])
    for note in report.get("notes", []):
        click.echo(f"note: {printable(note)}", err=True)
    for row in rows:
        if row["message"]:
            click.echo(f"{row['format']}-{row['precision']}: {printable(row['message'])}", err=True)
    summary = {"out": report["out"], "float_val_accuracy": report["float_val_accuracy"],
               "max_drop": report["max_drop"], "min_agreement": report["min_agreement"], "notes": report["notes"],
               "artifacts": [
        {k: r.get(k) for k in ("format", "precision", "delivered", "path", "status", "size_bytes", "seconds",
                               "val_accuracy", "drop_pp", "agreement", "float_layers", "latency_ms", "latency_ratio",
                               "golden_passed", "attempts", "message")} for r in rows]}
    failed = [f"{r['format']}-{r['precision']}" for r in rows if r["status"] == "failed"]
    if failed:
        # The others were delivered and stay; the exit code must still say a requested artifact is missing,
        # or a script that exports then deploys ships whatever the last good export left.
        from edgetl.errors import CheckFailedError

        fail(CheckFailedError(f"export failed for {', '.join(failed)} (the other artifacts were written)",
                              "see the message above for each; fix it and rerun: finished artifacts are skipped"),
             summary)
    return summary


@click.command(short_help="Compare every artifact with the float model on held-out images; gate on the drop.")
@click.argument("run_dir", type=click.Path())
@click.option("--data", type=click.Path(), help="Held-out image folder (default: the run's test split).")
@click.option("--split", type=click.Choice(["test", "val"]), help="The run's split to measure on (default: test, "
              "else val). Choose --min-confidence on val; quote test.")
@click.option("--artifacts", multiple=True, type=click.Path(),
              help="An artifact folder or model file. Repeatable (default: every RUN_DIR/export/*).")
@max_drop_option("Fail (exit 1) when an artifact's top-1 drops more than this many percentage points.",
                 none_means="no artifact fails on its drop")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Report folder (default RUN_DIR/parity).")
@threads_option()
@json_option
def parity(run_dir, data, split, artifacts, max_drop, report_dir, threads):
    """Evaluate the float model and every artifact on the same held-out images.

    Per artifact: top-1 (and top-5), drop versus float, top-1 agreement, KL divergence, cosine
    similarity, the worst class, and the images whose prediction changed; a preprocessing or
    runtime mismatch (golden samples) is reported as such. Writes report.md, report.json and
    parity.png. Exit code 1 when an artifact fails.
    """
    from edgetl.errors import CheckFailedError
    from edgetl.parity import gate, run_parity
    from edgetl.parity.report import artifact_name, golden_cell

    result = run_parity(run_dir, data=data, artifacts=list(artifacts) or None, max_drop=max_drop,
                        report_dir=report_dir, threads=threads, split=split)
    table(f"parity on {result['images']} images ({result['source']}), float {percent(result['float']['accuracy'])}",
          ["Artifact", "Status", "Top-1", "Drop pp", "Agreement", "KL", "Worst class", "Golden"],
          [[artifact_name(r), r["status"], percent(r.get("accuracy")), r.get("drop_pp"),
            percent(r.get("agreement")), r.get("kl"), r.get("worst_class"),
            golden_cell(r.get("golden"))]
           for r in result["artifacts"]])
    for row in result["artifacts"]:
        if row.get("detail") or row.get("error"):
            click.echo(printable(f"{artifact_name(row)}: {row['status']}: {row.get('detail') or row.get('error')}"),
                       err=True)
    _confidence_table(result)
    summary = {"images": result["images"], "source": result["source"], "float": result["float"],
               "max_drop": max_drop, "passed": result["passed"],
               "report": result["report"], "artifacts": [
                   {k: r.get(k) for k in ("format", "precision", "path", "status", "accuracy", "drop_pp", "agreement",
                                          "kl", "cosine", "worst_class", "top5", "golden", "detail",
                                          "float_layers", "sensitivity", "confidence")}
                   for r in result["artifacts"]]}
    try:
        gate(result)
    except CheckFailedError as error:
        fail(error, summary)
    return summary


def _confidence_table(result: dict) -> None:
    """Coverage / accuracy-on-covered at each --min-confidence, for the float model and every artifact."""
    from edgetl.parity.report import artifact_name

    columns = [("float", result["float"]["confidence"])]
    columns += [(artifact_name(r), r["confidence"]) for r in result["artifacts"] if r.get("confidence")]
    rows = []
    for index, first in enumerate(columns[0][1]):
        cells = [f"{first['min_confidence']:.1f}"]
        for _, points in columns:
            point = points[index]
            cells.append(f"{percent(point['coverage'])} / {percent(point['accuracy']) or '-'}")
        rows.append(cells)
    table(f"--min-confidence on {result['images']} images ({result['source']}): share named / top-1 of those",
          ["min conf."] + [name for name, _ in columns], rows)
