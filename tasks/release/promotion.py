"""The promotion gate: whether stage 4's result may become a version (``registration.require_improvement``)."""

from __future__ import annotations

from tasks.finetune.comparison import metric_difference


class PromotionRefused(Exception):
    """The adapter did not clear ``registration.require_improvement``; nothing was published."""


def promotion_check(rule: str, summary: dict) -> str | None:
    """Why ``rule`` refuses this result (the numbers, and what to change), or None when it passes."""
    combined = metric_difference(summary)
    measured = f"{summary['headline']} (measured on {summary['split']}.json)"
    if rule == "ci" and combined.verdict != "better":
        return (f"registration.require_improvement: ci needs the whole interval of the combined score's change above "
                f"0. {measured}. Nothing registered: more test questions narrow the interval (more documents, "
                "or a larger dataset_generator.split.test); require_improvement: mean or none registers anyway")
    if rule == "mean" and combined.delta <= 0:
        return (f"registration.require_improvement: mean needs the combined score's mean change above 0. "
                f"{measured}. Nothing registered (require_improvement: none registers anyway)")
    return None
