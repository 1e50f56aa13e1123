"""The gate's attempt chain on fabricated results: no model, no file, no converter."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgetl.errors import BadInputError
from edgetl.export import ExportSettings, chain, gate, onnx, openvino, tflite

RECIPES = tuple(onnx.int8_recipes(300, 1000))  # MinMax 300, MinMax 1000, Percentile 300
QAT = gate.qat("int8 QAT, 4 epoch(s) at lr 0.0001")
LAYERS = ("blocks.1", "conv_stem", "blocks.6", "head", "blocks.2", "blocks.3", "blocks.4", "blocks.5")
GOOD = {"drop_pp": 0.2, "agreement": 0.995}
CLOSE = {"drop_pp": 0.8, "agreement": 0.98}  # within the drop, short of the agreement
BAD = {"drop_pp": 4.0, "agreement": 0.9}
SLOW = {"ratio": 1.4, "p50_ms": 1.4, "fp32_p50_ms": 1.0, "threads": 2}


def plan(precision: str = "int8", **settings) -> chain.Plan:
    return chain.Plan(precision, ExportSettings(**settings), RECIPES, QAT)


def walk(plan: chain.Plan, measured: dict, seconds: float = 0.0, ranking=chain.Ranking(LAYERS)):
    """Drive the chain as the Exporter does; `measured` maps an attempt's `what` to its metrics (absent:
    the attempt fails). Returns the final step, the results and the trail of steps."""
    results, given, trail = [], None, []
    while True:
        step = chain.next_step(plan, results, seconds, given)
        if step.kind == "done":
            return step, results, trail
        if step.kind == "rank":
            given = ranking
            trail.append(("rank",))
            continue
        trail.append((step.kind, step.attempt.what, step.reason))
        results.append(chain.Result(step.attempt, measured.get(step.attempt.what) if step.kind == "try" else None))


def whats(trail, kind: str = "try") -> list[str]:
    return [entry[1] for entry in trail if entry[0] == kind]


def test_every_recipe_is_searched_and_the_best_one_that_passes_is_delivered():
    step, results, trail = walk(plan(), {RECIPES[0].what: CLOSE, RECIPES[1].what: GOOD, RECIPES[2].what: BAD})
    assert whats(trail) == [r.what for r in RECIPES] and ("rank",) not in trail  # no ranking needed
    assert step.deliver == 1 and step.statuses == {1: "accepted"}


def test_the_search_keeps_only_the_best_result_so_far():
    p, results = plan(), []
    assert chain.next_step(p, results, 0.0).keep is None
    results.append(chain.Result(RECIPES[0], CLOSE))
    assert chain.next_step(p, results, 0.0).keep == 0
    results.append(chain.Result(RECIPES[1], BAD))
    assert chain.next_step(p, results, 0.0).keep == 0  # the worse one can go at once
    results.append(chain.Result(RECIPES[2], GOOD))
    assert chain.next_step(p, results, 0.0).deliver == 2


def test_a_pass_stops_the_chain_at_the_fewest_float_layers():
    measured = {r.what: CLOSE for r in RECIPES}
    mixed = gate.mixed(RECIPES[0], list(LAYERS))
    measured[mixed[0].what], measured[mixed[1].what] = BAD, GOOD
    step, results, trail = walk(plan(), measured)
    assert trail[3] == ("rank",) and whats(trail)[3:] == [mixed[0].what, mixed[1].what]
    assert results[step.deliver].attempt.options["float_layers"] == list(LAYERS[:2])
    assert step.statuses[0].startswith("best recipe, agreement 98.00% < 98.5%")
    assert step.statuses[3] == "rejected: drop 4.00 pp > 1.0, agreement 90.00% < 98.5%"
    assert step.statuses[4] == "accepted" and 1 not in step.statuses  # beaten recipes stay "measured"


def test_after_mixed_precision_comes_qat_then_fp16_then_fp32_which_is_always_delivered():
    step, results, trail = walk(plan(), {r.what: BAD for r in RECIPES})
    stages = [results[i].attempt.stage for i in range(len(results))]
    order = [s for i, s in enumerate(stages) if s not in stages[:i]]
    assert order == ["recipe", "mixed", "qat", "fallback"]
    assert whats(trail)[-2:] == ["fp16", "fp32 (last resort)"]
    assert len([s for s in stages if s == "qat"]) == 4  # QAT, then with 1, 2, 3 layers float
    assert step.deliver is None  # the last resort failed too: nothing to publish
    step, _, _ = walk(plan(), {r.what: BAD for r in RECIPES} | {"fp32 (last resort)": BAD})
    assert step.statuses[step.deliver] == "accepted"  # fp32 is delivered whatever it measures


def test_a_speed_miss_skips_mixed_precision_and_qat_with_the_named_message():
    slow = {**GOOD, "speed": SLOW}
    step, results, trail = walk(plan(), {r.what: slow for r in RECIPES} | {"fp16": GOOD})
    assert trail[3] == ("skip", "mixed precision and QAT", "every int8 recipe ran slower than fp32 here")
    assert ("rank",) not in trail and whats(trail)[3:] == ["fp16"]
    assert step.statuses[0].startswith("best recipe, int8 is 1.40x the fp32 latency here")
    assert results[step.deliver].attempt.what == "fp16"


def test_without_the_speed_gate_a_slow_int8_is_kept():
    slow = {**GOOD, "speed": SLOW}
    step, results, _ = walk(plan(speed_gate=False), {r.what: slow for r in RECIPES})
    assert results[step.deliver].attempt.precision == "int8" and step.statuses == {0: "accepted"}


def test_a_spent_budget_skips_int8_attempts_but_never_the_fallbacks():
    step, results, trail = walk(plan(budget_seconds=10), {RECIPES[0].what: BAD, "fp16": GOOD}, seconds=11)
    assert whats(trail) == [RECIPES[0].what, "fp16"]  # the first attempt always runs
    skipped = {entry[2] for entry in trail if entry[0] == "skip"}
    assert skipped == {"time budget spent"} and len(whats(trail, "skip")) == 2 + 5 + 4
    assert results[step.deliver].attempt.what == "fp16"


def test_an_unmeasured_ranking_skips_mixed_precision_but_not_qat():
    step, results, trail = walk(plan(), {r.what: BAD for r in RECIPES} | {QAT.what: GOOD},
                                ranking=chain.Ranking((), measured=False))
    assert trail[4] == ("skip", "mixed precision", "the layer sensitivity could not be measured")
    assert whats(trail)[3:] == [QAT.what] and step.statuses[step.deliver] == "accepted"


def test_qat_off_goes_from_mixed_precision_to_fp16():
    step, results, trail = walk(plan(qat="off"), {r.what: BAD for r in RECIPES} | {"fp16": GOOD})
    assert "qat" not in {r.attempt.stage for r in results}
    assert results[step.deliver].attempt.what == "fp16"


def test_forced_qat_is_the_only_int8_and_asks_for_the_ranking_first():
    step, results, trail = walk(plan(qat="force"), {QAT.what: CLOSE})
    assert trail[0] == ("rank",) and not any(r.attempt.stage == "recipe" for r in results)
    assert [r.attempt.stage for r in results] == ["qat"] * 4 + ["fallback", "fallback"]


def test_without_the_gate_one_attempt_is_delivered_as_measured():
    for p, first in [(plan(max_drop=None), RECIPES[0]), (plan(max_drop=None, qat="force"), QAT),
                     (plan("fp32"), gate.Attempt("fp32", "fp32")), (plan("fp16"), gate.Attempt("fp16", "fp16"))]:
        step, results, trail = walk(p, {first.what: BAD}, seconds=1e9)
        assert whats(trail) == [first.what] and step.deliver == 0 and step.statuses == {}
        assert walk(p, {})[0].deliver is None  # it failed: nothing to publish


def test_the_chain_is_pure():
    p, results = plan(), [chain.Result(RECIPES[0], dict(CLOSE))]
    assert chain.next_step(p, results, 0.0) == chain.next_step(p, results, 0.0)
    assert results == [chain.Result(RECIPES[0], CLOSE)]  # nothing it was given changed


def test_every_format_offers_its_own_search():
    for module in (onnx, openvino, tflite):
        searched, alone = module.int8_recipes(300, 1000), module.int8_recipes(300, 1000, searched=False)
        assert alone == searched[:1] and len(searched) >= 2
        assert all(r.precision == "int8" and r.stage == "recipe" for r in searched)
    assert len(tflite.int8_recipes(300, 300)) == 1  # the split has no more images than calib_size


def test_messages_say_why_int8_was_not_delivered():
    settings = ExportSettings()
    timed = [{"status": "best recipe, ...", "speed": SLOW}]
    assert chain.explain(settings, "int8", "fp16", timed, [], []).endswith("--no-speed-gate keeps int8 regardless")
    missed = chain.explain(settings, "int8", "fp32", [{"status": "rejected"}], [], ["blocks.1"])
    assert "missed the gate (drop <= 1.0 pp, agreement >= 98.5%)" in missed and missed.endswith("blocks.1")
    assert chain.explain(settings, "int8", None, [{"status": "error", "error": "boom"}], [], []) == "boom"
    assert chain.explain(settings, "int8", "int8", [], ["head"], []) == "int8 with 1 layer(s) kept float: head"
    assert chain.delivered_status(gate.Attempt("x", "int8", stage="mixed"), "int8", "int8") == "mixed precision"
    assert chain.delivered_status(QAT, "fp16", "int8") == "fallback"


def test_settings_are_frozen_and_checked_at_construction():
    settings = ExportSettings()
    assert (settings.calib_size, settings.max_drop, settings.min_agreement) == (300, 1.0, 0.985)
    with pytest.raises(AttributeError):
        settings.max_drop = 2.0  # frozen
    with pytest.raises(TypeError):
        ExportSettings(max_dorp=2.0)  # a typo fails instead of taking the default
    for bad in ({"qat": "sometimes"}, {"max_drop": -1}, {"min_agreement": 1.5}, {"calib_size": 0},
                {"budget_seconds": float("nan")}, {"calib_data": 3}):
        with pytest.raises(BadInputError, match="export settings: field"):
            ExportSettings(**bad)
    ungated = replace(settings, max_drop=None)
    assert ungated.agreement_bound is None and ungated.calibration_draw == 300
    assert settings.calibration_draw == gate.CALIBRATION_CAP
