"""The promotion gate: whether stage 4's result may become a version (``registration.require_improvement``)."""

from __future__ import annotations

from tasks.common.paired import Paired
from tasks.finetune.comparison import metric_difference


class PromotionRefused(Exception):
    """The adapter did not clear ``registration.require_improvement``; nothing was published."""


def promotion_check(rule: str, summary: dict) -> str | None:
    """Why ``rule`` refuses this result (the numbers, and what to change), or None when it passes: against the base
    model, and against the version serving now where 4d measured it (``vs_previous``), by the same rule."""
    if why := _refusal(rule, metric_difference(summary), f"{summary['headline']} (measured on {summary['split']}.json)"):
        return why
    if against := summary.get("vs_previous"):
        return _refusal(rule, Paired.model_validate(against["combined"]),
                        f"Against the version serving now, {against['headline'].removeprefix('against ')}", against["version"])
    return None


def _refusal(rule: str, combined: Paired, measured: str, version: str | None = None) -> str | None:
    if version is not None and rule != "none" and (combined.verdict != "better" if rule == "ci" else combined.delta <= 0):
        return (f"registration.require_improvement: {rule} holds a new version to the one serving now ({version}) too. "
                f"{measured}. Nothing registered: {version} keeps serving")
    if rule == "ci" and combined.verdict != "better":
        return (f"registration.require_improvement: ci needs the whole interval of the combined score's change above "
                f"0. {measured}. Nothing registered: more test questions narrow the interval (more documents, "
                "or a larger dataset_generator.split.test); require_improvement: mean or none registers anyway")
    if rule == "mean" and combined.delta <= 0:
        return (f"registration.require_improvement: mean needs the combined score's mean change above 0. "
                f"{measured}. Nothing registered (require_improvement: none registers anyway)")
    return None
