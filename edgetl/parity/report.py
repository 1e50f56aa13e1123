"""The parity report: report.json, report.md and parity.png, written atomically."""

from __future__ import annotations

from pathlib import Path

from edgetl import atomic


def artifact_name(row: dict) -> str:
    """The artifact's folder name (what `export` wrote: onnx-int8), with the delivered precision when the
    gate fell back (tflite-int8 (fp32)); a broken artifact still has its folder's name."""
    path = Path(row["path"])
    folder = path.name if path.suffix not in (".onnx", ".xml", ".tflite") else path.parent.name
    requested = folder.rsplit("-", 1)[-1]
    precision = row.get("precision")
    fell_back = precision and requested in ("fp32", "fp16", "int8") and requested != precision
    return f"{folder} ({precision})" if fell_back else folder




def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _gate_text(max_drop: float | None) -> str:
    return f"drop <= {max_drop} pp" if max_drop is not None else "off (--max-drop none)"


def markdown(result: dict) -> str:
    lines = [
        f"# Parity report: {result['run_dir']}",
        "",
        f"{result['images']} held-out images ({result['source']}); float model accuracy "
        f"{_pct(result['float']['accuracy'])}; gate: {_gate_text(result['max_drop'])}. "
        f"Verdict: **{'passed' if result['passed'] else 'FAILED'}**.",
        "",
        "| artifact | status | top-1 | drop (pp) | agreement | KL | cosine | worst class | golden |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in result["artifacts"]:
        golden = row.get("golden") or {}
        lines.append(
            f"| {artifact_name(row)} | {row['status']} | {_pct(row.get('accuracy'))} | {row.get('drop_pp', '-')} | "
            f"{_pct(row.get('agreement'))} | {row.get('kl', '-')} | {row.get('cosine', '-')} | "
            f"{row.get('worst_class') or '-'} ({row.get('worst_class_drop_pp', '-')} pp) | "
            f"{golden_cell(golden)} |")
    for row in result["artifacts"]:
        if row.get("detail") or row.get("error"):
            lines += ["", f"**{artifact_name(row)}**: {row.get('detail') or row.get('error')}"]
        changed = row.get("changed_images") or []
        if changed:
            lines += ["", f"{artifact_name(row)}: {len(changed)} image(s) changed prediction: "
                      + ", ".join(f"`{p}`" for p in changed[:20]) + (" ..." if len(changed) > 20 else "")]
    lines += confidence_markdown(result)
    lines += sensitivity_markdown(result)
    return "\n".join(lines) + "\n"


def confidence_markdown(result: dict) -> list[str]:
    """What `edgetl run --min-confidence P` would cost: per P, the share of images still named a class and
    the top-1 accuracy on those (the rest are reported unknown)."""
    columns = [("float", result["float"].get("confidence") or [])]
    columns += [(artifact_name(r), r["confidence"]) for r in result["artifacts"] if r.get("confidence")]
    if not columns[0][1]:
        return []
    lines = ["", "## Confidence threshold (`edgetl run --min-confidence P`)", "",
             "Per P: share of images named a class / top-1 accuracy on those; the rest are reported unknown. "
             "Choose P on the validation split (`edgetl parity RUN --split val`), then quote the test split.", "",
             "| P | " + " | ".join(name for name, _ in columns) + " |",
             "| --- |" + " --- |" * len(columns)]
    for index, first in enumerate(columns[0][1]):
        cells = [f"{_pct(points[index]['coverage'])} / {_pct(points[index]['accuracy'])}" for _, points in columns]
        lines.append(f"| {first['min_confidence']:.1f} | " + " | ".join(cells) + " |")
    return lines


def sensitivity_markdown(result: dict, rows: int = 10) -> list[str]:
    """Per int8 artifact: the layers that cost the most when quantized alone, worst first."""
    lines = []
    for row in result["artifacts"]:
        layers = row.get("sensitivity") or []
        if not layers:
            continue
        how = row.get("sensitivity_method") or {}
        kept = (f"Kept in float: {', '.join(f'`{x}`' for x in row.get('float_layers') or []) or 'none'}."
                if row.get("precision") == "int8" else
                f"int8 missed the gate in every attempt, so this artifact is {row.get('precision')}: these "
                "layers held it back.")
        lines += ["", f"## int8 sensitivity: {artifact_name(row)}", "",
                  f"{how.get('method', '')}; {how.get('images', '?')} {how.get('split', 'calibration')} images. "
                  + kept, "",
                  "| layer (torch module) | SQNR alone (dB) | KL alone | agreement if kept float |",
                  "| --- | --- | --- | --- |"]
        for layer in layers[:rows]:
            lines.append(f"| `{layer['layer']}` | {layer['sqnr_db']} | {layer['kl']} | "
                         f"{_pct(layer.get('agreement_if_float'))} |")
    return lines


def sensitivity_groups(result: dict, rows: int = 10) -> list[tuple[list[dict], list[dict]]]:
    """The int8 artifacts that share one measured ranking (an export session measures it once, on the
    float model, for every format), as (ranking's worst `rows` layers, those artifacts)."""
    groups: dict[tuple, tuple[list[dict], list[dict]]] = {}
    for row in result["artifacts"]:
        if row.get("sensitivity"):
            layers = row["sensitivity"][:rows]
            key = tuple((x["layer"], x["sqnr_db"]) for x in layers)
            groups.setdefault(key, (layers, []))[1].append(row)
    return list(groups.values())


def plot_sensitivity(result: dict, path: Path, rows: int = 10) -> bool:
    """sensitivity.png: the SQNR of the worst layers (lower = more sensitive), one panel per measured
    ranking, each bar naming the artifacts that kept that layer float."""
    groups = sensitivity_groups(result, rows)
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(7 * len(groups), 0.4 * rows + 2), squeeze=False)
    for ax, (layers, artifacts) in zip(axes[0], groups):
        kept = [[artifact_name(r) for r in artifacts if x["layer"] in (r.get("float_layers") or [])]
                for x in layers]
        bars = ax.barh([x["layer"] for x in layers], [x["sqnr_db"] for x in layers],
                       color=["tab:orange" if names else "tab:blue" for names in kept])
        for bar, names in zip(bars, kept):
            if names:
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, "  float in " + ", ".join(names),
                        va="center", fontsize=7)
        ax.invert_yaxis()
        ax.margins(x=0.45)
        ax.set(xlabel="logit SQNR with only this layer int8 (dB; lower = more sensitive)",
               title="int8 sensitivity, worst layers first: " + ", ".join(artifact_name(r) for r in artifacts))
        ax.title.set_fontsize(9)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return True


def plot(result: dict, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in result["artifacts"] if r.get("accuracy") is not None]
    fig, (ax_acc, ax_cls) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.45 * len(rows) + 2)),
                                         gridspec_kw={"width_ratios": [1, 1.4]})
    names = [artifact_name(r) for r in rows]
    colours = ["tab:green" if r["status"] == "ok" else "tab:red" for r in rows]
    ax_acc.barh(names, [100 * r["accuracy"] for r in rows], color=colours)
    ax_acc.axvline(100 * result["float"]["accuracy"], color="black", linestyle="--", label="float")
    lowest = min([100 * r["accuracy"] for r in rows] + [100 * result["float"]["accuracy"]]) if rows else 0
    ax_acc.set_xlim(max(0.0, lowest - 10), 100.5)  # differences of a point or two must be visible
    ax_acc.set(xlabel="top-1 accuracy (%)", title="accuracy per artifact (red: failed)")
    ax_acc.invert_yaxis()
    ax_acc.legend(loc="lower right")
    drops = np.array([[r["per_class"].get(c, {}).get("drop_pp", 0.0) for c in classes] for r in rows]) \
        if rows else np.zeros((0, len(classes)))
    limit = max(1.0, float(np.abs(drops).max()) if drops.size else 1.0)
    image = ax_cls.imshow(drops, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax_cls.set_yticks(range(len(names)), names)
    ax_cls.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 8 else 0)
    ax_cls.set(title="per-class accuracy drop vs float (pp; red = worse)")
    fig.colorbar(image, ax=ax_cls, fraction=0.04)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_report(result: dict, classes: list[str], folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "png": folder / "parity.png"}
    atomic.write_json(paths["json"], result)
    atomic.write_text(paths["markdown"], markdown(result))
    plot(result, classes, paths["png"])
    if plot_sensitivity(result, folder / "sensitivity.png"):
        paths["sensitivity_png"] = folder / "sensitivity.png"
    return {k: str(v) for k, v in paths.items()}


def golden_cell(golden: dict | None) -> str:
    """'4/4', or '4/4 (float top-1 3/4)' when quantization changed a golden answer."""
    if not golden:
        return "-"
    text = f"{golden.get('matched', '-')}/{golden.get('total', '-')}"
    if golden.get("float_matched") is not None and golden["float_matched"] != golden.get("total"):
        text += f" (float top-1 {golden['float_matched']}/{golden['total']})"
    return text
