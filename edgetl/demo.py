"""The end-to-end demo: every link of the chain on data that ships with a package.

Kept as a library function so tests and the CLI run the same thing. Each issue
that adds a link (export, parity, bench, deploy) extends `run_demo`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgetl import atomic
from edgetl.console import info

DEMO_MIN_AGREEMENT = 0.99


def run_demo(out: str | Path = "demo", epochs: int = 3, formats: list[str] | None = None,
             max_drop: float = 1.0) -> dict:
    from edgetl.data.demo import write_demo_data
    from edgetl.export import FORMATS, ExportSettings, export_run
    from edgetl.parity import run_parity
    from edgetl.train import TrainConfig, finetune

    out = Path(out)
    data_dir, run_dir = out / "digits", out / "run"
    if not atomic.made_by_edgetl(data_dir):
        write_demo_data(data_dir, per_class=180, size=64)  # refuses a folder of the user's own
    if run_dir.exists() or run_dir.is_symlink():
        atomic.ensure_replaceable(run_dir, "demo's run")  # the demo always shows a fresh run
        shutil.rmtree(run_dir)
    info(f"efficientnet_lite0 (offline ImageNet weights) on {data_dir}", heading="1/6 finetune")
    summary = finetune(TrainConfig(
        data=str(data_dir), model="efficientnet_lite0", out=str(run_dir), epochs=epochs, img_size=64,
        batch_size=32, lr=0.003, backbone_lr_mult=0.5, strategy="finetune",
    ))
    formats = formats or list(FORMATS)
    # The digits validation split is ~270 images (one image = 0.37 pp, judged on 3 shifted views of each):
    # the demo asks int8 to agree on 99% to leave the test split a margin under the 1 pp parity bound.
    gate_text = (f"gated at {max_drop} pp and {100 * DEMO_MIN_AGREEMENT:.0f}% agreement" if max_drop is not None
                 else "with the int8 gate off (--max-drop none)")
    info(f"{', '.join(formats)} in fp32 and int8, {gate_text}", heading="2/6 export")
    exported = export_run(run_dir, formats, ["fp32", "int8"],
                          ExportSettings(calib_size=300, max_drop=max_drop, min_agreement=DEMO_MIN_AGREEMENT))
    info("every artifact against the float model on the test split", heading="3/6 parity")
    parity = run_parity(run_dir, max_drop=max_drop)
    info("latency of every artifact through the device runtime", heading="4/6 bench")
    from edgetl.bench import run_bench

    artifacts = [r["path"] for r in exported["artifacts"] if r["delivered"]]
    bench = run_bench(artifacts, runs=50, warmup=5, plot=run_dir / "bench.png")
    info("the device runtime over the held-out images", heading="5/6 run")
    held_out = _run_held_out(run_dir, artifacts[-1])
    info("locally: bundle, install with no index, self-test, atomic switch", heading="6/6 deploy")
    deployed = _deploy_locally(run_dir, out / "device")
    return {
        "finetune": {k: v for k, v in summary.items() if k not in ("confusion", "config")},
        "export": [{k: r[k] for k in ("format", "precision", "delivered", "path", "status", "size_bytes", "seconds",
                                       "val_accuracy", "drop_pp", "agreement")} for r in exported["artifacts"]],
        "parity": {"float": parity["float"], "passed": parity["passed"], "report": parity["report"],
                   "artifacts": [{k: r.get(k) for k in ("format", "precision", "path", "status", "accuracy", "drop_pp",
                                                        "agreement")} for r in parity["artifacts"]]},
        "bench": {"cpu": bench["cpu"], "plot": bench["plot"], "figures": bench.get("figures", {}), "models": [
            {k: m[k] for k in ("path", "format", "precision", "size_mb", "accuracy", "p50_ms", "p99_ms", "fps",
                               "rss_peak_mb")} for m in bench["models"]]},
        "run": held_out,
        "deploy": deployed,
    }


def _deploy_locally(run_dir: Path, device_dir: Path) -> dict:
    """`edgetl deploy --local` with the generic profile of this machine's architecture."""
    import platform
    import tempfile

    from edgetl.deploy.bundle import build_bundle
    from edgetl.deploy.local import install_release
    from edgetl.deploy.profiles import get_profile
    
    profile = get_profile("linux-aarch64" if platform.machine() in ("aarch64", "arm64") else "linux-x86")
    with tempfile.TemporaryDirectory(prefix="edgetl-demo-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle(run_dir, profile, bundle, samples=30)
        return install_release(bundle, device_dir)


def _run_held_out(run_dir: Path, model: str) -> dict:
    """`edgetl run` over the test split, as the device would see those photos one by one."""
    from edgetl.contract.run_dir import RunDir
    from edgetl.data.splits import load_split
    from edgetl.runtime import load
    from edgetl.runtime.sources import ImageSource
    from edgetl.runtime.stream import run_stream

    run = RunDir(run_dir)
    samples = load_split(run.path, "test")
    root = run.data_root()
    truth = {str(root / s.path): s.label for s in samples}
    correct = 0

    def count(result) -> None:
        nonlocal correct
        correct += result.topk[0][0] == truth[result.frame.name]

    summary = run_stream(load(model), ImageSource([root / s.path for s in samples], "test split"), on_result=count)
    summary.update(model=model, accuracy=round(correct / max(1, summary["frames"]), 6))
    return summary
