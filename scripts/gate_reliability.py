#!/usr/bin/env python3
"""How far the int8 gate's agreement estimate on a small validation split is from the truth,
with and without shifted views (edgetl/export/views.py).

For each int8 artifact of a run, on the run's *validation* split only (the test
split stays for the final figures): draw many small subsets of `--small`
images; estimate agreement with the float model on the subset's images alone
and on their shifted views; compare each estimate, and the pass/fail decision
at `--bound`, with the agreement on the rest of the split (the images not
drawn). Prints the error of each estimate (bias, RMSE, in pp) and how often
each decision differs from the rest's.

    python scripts/gate_reliability.py --run RUN_DIR ARTIFACT [ARTIFACT ...] [--small 160] [--bound 0.985]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

import numpy as np


def per_image_agreement(reference, artifact: str, pixels: np.ndarray, views: int) -> tuple[np.ndarray, np.ndarray]:
    """(images,) 1/0 agreement of each original image, and (images,) fraction of its views that agree."""
    from edgetl import runtime
    from edgetl.evaluation import runner_logits
    from edgetl.export.views import shifted_views

    every = shifted_views(pixels, views)
    agree = reference.logits(every).argmax(1) == runner_logits(runtime.load(artifact), every).argmax(1)
    by_view = agree.reshape(views, len(pixels))
    return by_view[0].astype(float), by_view.mean(axis=0)


def simulate(original: np.ndarray, viewed: np.ndarray, small: int, bound: float, trials: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n = len(original)
    errors = {"images": [], "views": []}
    wrong = {"images": 0, "views": 0}
    for _ in range(trials):
        drawn = np.zeros(n, bool)
        drawn[rng.choice(n, small, replace=False)] = True
        truth = original[~drawn].mean()
        for name, values in (("images", original), ("views", viewed)):
            estimate = values[drawn].mean()
            errors[name].append(estimate - truth)
            wrong[name] += (estimate >= bound) != (truth >= bound)
    row = {"agreement_all_images": round(float(original.mean()), 4), "agreement_all_views": round(float(viewed.mean()), 4)}
    for name in errors:
        e = 100 * np.array(errors[name])
        row[name] = {"bias_pp": round(float(e.mean()), 3), "rmse_pp": round(float(np.sqrt((e ** 2).mean())), 3),
                     "decision_differs": round(wrong[name] / trials, 3)}
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--run", required=True)
    parser.add_argument("--small", type=int, default=160)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--bound", type=float, default=0.985)
    parser.add_argument("--trials", type=int, default=4000)
    args = parser.parse_args(argv)
    from edgetl.bench.cpu import cpu_features
    from edgetl.export.reference import load_reference

    reference = load_reference(args.run)
    val = reference.labelled("val")
    cpu = cpu_features()
    print(f"# {cpu['model']} ({platform.machine()}, {', '.join(cpu['features'])}); run {args.run}: {len(val)} validation images, subsets of "
          f"{args.small}, {args.views} views, bound {100 * args.bound:.1f}%", file=sys.stderr)
    rows = []
    for artifact in args.artifacts:
        original, viewed = per_image_agreement(reference, artifact, val.pixels, args.views)
        rows.append({"artifact": artifact, **simulate(original, viewed, args.small, args.bound, args.trials)})
        print(json.dumps(rows[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
