"""The gate's attempt chain as a pure function: from the attempts so far and the bounds, the next step.

The Exporter runs what `next_step` asks for, appends the `Result` and asks again;
nothing here touches a model, a file or a clock, so the chain is tested on
fabricated results. The order is gate.py's: the format's calibration search, the
best recipe with its most sensitive layers in float, QAT, fp16, fp32. An int8
attempt slower than its format's fp32 misses unless `speed_gate` is off; once the
time budget is spent only the fallbacks still run (the first attempt always does).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from edgetl.export import gate, speed
from edgetl.export.gate import Attempt
from edgetl.export.settings import ExportSettings

STATUS_OF_STAGE = {"recipe": "ok", "mixed": "mixed precision", "qat": "qat"}  # anything else: "fallback"


@dataclass(frozen=True)
class Plan:
    """One artifact's chain: the precision asked for, the settings that bound it, and what int8 may try."""

    precision: str
    settings: ExportSettings
    recipes: tuple[Attempt, ...] = ()  # the format's int8 calibration search, its default first
    qat: Attempt | None = None  # quantization-aware training (gate.qat)

    @property
    def gated(self) -> bool:
        return self.precision == "int8" and self.settings.gated


@dataclass(frozen=True)
class Ranking:
    """The measured int8 sensitivity, worst layer first; `measured` False when it could not be measured."""

    layers: tuple[str, ...] = ()
    measured: bool = True


@dataclass(frozen=True)
class Result:
    """One entry of the artifact's attempt record: its metrics, or None when it failed or was skipped."""

    attempt: Attempt
    metrics: dict | None = None


@dataclass(frozen=True)
class Step:
    """What to do next. kind "try": run `attempt`; "skip": record it skipped for `reason`; "rank": measure
    the layer sensitivity, then ask again; "done": give the judged records `statuses` and publish
    results[`deliver`] (None: nothing can be). Every measured result but `keep` (the one that may still be
    delivered) and `deliver` can be discarded."""

    kind: str
    attempt: Attempt | None = None
    reason: str = ""
    deliver: int | None = None
    keep: int | None = None
    statuses: dict[int, str] = field(default_factory=dict)


def next_step(plan: Plan, results: list[Result], seconds: float, ranking: Ranking | None = None) -> Step:
    """The step after `results` (one per attempt record, in order), `seconds` into the chain;
    `ranking` stays None until a "rank" step asked for it."""
    step = _planned(plan, results, ranking)
    if step.kind == "try" and plan.gated and results and seconds > plan.settings.budget_seconds \
            and step.attempt.stage != "fallback":
        return replace(step, kind="skip", reason="time budget spent")
    return step


def judged(settings: ExportSettings, metrics: dict) -> dict:
    """Measured metrics with the speed check's verdict (`too_slow`), as gate.passes and gate.better read them."""
    return {**metrics, "too_slow": settings.speed_gate and speed.too_slow(metrics.get("speed"))}


def miss(settings: ExportSettings, metrics: dict) -> str:
    """Each bound a judged attempt broke, in one line."""
    reasons = [speed.miss(metrics["speed"])] if metrics.get("too_slow") else []
    if metrics["drop_pp"] > settings.max_drop:
        reasons.append(f"drop {metrics['drop_pp']:.2f} pp > {settings.max_drop}")
    agreement, bound = gate.agreement_of(metrics), settings.agreement_bound
    if bound is not None and agreement < bound:
        where = f" on {metrics['views']} views of each image" if metrics.get("views", 1) > 1 else ""
        reasons.append(f"agreement {100 * agreement:.2f}%{where} < {100 * bound:.1f}%")
    return ", ".join(reasons)


def delivered_status(attempt: Attempt, delivered: str, requested: str) -> str:
    """The artifact's status: ok, mixed precision or qat when the requested precision came out, else fallback."""
    return STATUS_OF_STAGE.get(attempt.stage, "fallback") if delivered == requested else "fallback"


def explain(settings: ExportSettings, requested: str, delivered: str | None, attempts: list[dict],
            float_layers: list[str], worst_layers: list[str]) -> str:
    """The artifact's one-line message: why it failed, why it fell back, or which layers stayed float."""
    if delivered is None:
        return "; ".join(a.get("error", a["status"]) for a in attempts)
    if delivered != requested and settings.speed_gate and speed.all_too_slow(attempts):
        fastest = min((a["speed"] for a in attempts if a.get("speed")), key=lambda r: r["ratio"])
        return f"delivered {delivered}: {speed.miss(fastest)}; --no-speed-gate keeps int8 regardless"
    if delivered != requested:
        worst = ", ".join(worst_layers)
        return (f"delivered {delivered}: {requested} missed the gate (drop <= {settings.max_drop} pp, "
                f"agreement >= {100 * (settings.agreement_bound or 0):.1f}%) on validation in every attempt"
                + (f"; the most sensitive layers: {worst}" if worst else ""))
    if float_layers:
        return f"int8 with {len(float_layers)} layer(s) kept float: {', '.join(float_layers)}"
    return ""


def _planned(plan: Plan, results: list[Result], ranking: Ranking | None) -> Step:
    if plan.precision != "int8":
        return _single(Attempt(plan.precision, plan.precision), results)
    forced = plan.settings.qat == "force"
    if not plan.settings.gated:
        return _single(plan.qat if forced else plan.recipes[0], results)
    if forced:
        if ranking is None:
            return Step("rank")
        return _first_passing(plan, _tries([plan.qat, *_qat_mixed(plan.qat, ranking), *gate.fallbacks()]),
                              results, 0, {})
    searched = len(plan.recipes)
    best = _best(plan.settings, results[:searched])
    if len(results) < searched:
        return Step("try", plan.recipes[len(results)], keep=best)
    return _after_search(plan, results, best, ranking)


def _single(attempt: Attempt, results: list[Result]) -> Step:
    """Without the gate: one attempt, delivered as measured."""
    if not results:
        return Step("try", attempt)
    return Step("done", deliver=0 if results[0].metrics is not None else None)


def _best(settings: ExportSettings, results: list[Result]) -> int | None:
    """The best measured recipe (gate.better; the earlier one on a tie)."""
    best = None
    for index, result in enumerate(results):
        if result.metrics is None:
            continue
        if gate.better(judged(settings, result.metrics),
                       judged(settings, results[best].metrics) if best is not None else None):
            best = index
    return best


def _after_search(plan: Plan, results: list[Result], best: int | None, ranking: Ranking | None) -> Step:
    """The best recipe if it passes; else mixed precision on it, QAT, fp16, fp32, the first that passes."""
    settings, statuses, slow = plan.settings, {}, False
    if best is not None:
        metrics = judged(settings, results[best].metrics)
        if gate.passes(metrics, settings.max_drop, settings.agreement_bound):
            return Step("done", deliver=best, statuses={best: "accepted"})
        statuses[best] = "best recipe, " + miss(settings, metrics)
        slow = bool(metrics["too_slow"])  # mixed precision and QAT keep the same graph or add float layers
    if ranking is None and not slow and (best is not None or settings.qat == "auto"):
        return Step("rank")
    later: list[Step] = []
    if best is not None and slow:
        later.append(_skip("mixed precision and QAT", "every int8 recipe ran slower than fp32 here"))
    elif best is not None and not ranking.measured:
        later.append(_skip("mixed precision", "the layer sensitivity could not be measured"))
    elif best is not None:
        later += _tries(gate.mixed(results[best].attempt, list(ranking.layers)))
    if settings.qat == "auto" and not slow:
        later += _tries([plan.qat, *_qat_mixed(plan.qat, ranking)])
    return _first_passing(plan, later + _tries(gate.fallbacks()), results, len(plan.recipes), statuses)


def _first_passing(plan: Plan, entries: list[Step], results: list[Result], start: int,
                   statuses: dict[int, str]) -> Step:
    """The entries from results[start] on: the first that passes is delivered (fp32, the last resort,
    always is); each measured one before it is rejected."""
    statuses = dict(statuses)
    for index, entry in enumerate(entries, start):
        if index >= len(results):
            return entry
        if entry.kind == "skip" or results[index].metrics is None:
            continue
        metrics = judged(plan.settings, results[index].metrics)
        if entry.attempt.last_resort or gate.passes(metrics, plan.settings.max_drop, plan.settings.agreement_bound):
            return Step("done", deliver=index, statuses={**statuses, index: "accepted"})
        statuses[index] = "rejected: " + miss(plan.settings, metrics)
    return Step("done", statuses=statuses)


def _qat_mixed(qat_attempt: Attempt, ranking: Ranking) -> list[Attempt]:
    return gate.mixed(qat_attempt, list(ranking.layers), counts=gate.MIXED_COUNTS[:3], stage="qat")


def _tries(attempts: list[Attempt]) -> list[Step]:
    return [Step("try", attempt) for attempt in attempts]


def _skip(what: str, why: str) -> Step:
    """A step the chain leaves out, recorded with its reason (no precision: nothing was made)."""
    return Step("skip", Attempt(what, "int8", stage="mixed"), reason=why)
