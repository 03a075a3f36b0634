"""Names derived from the domain: registered adapters, Hub repos, W&B projects; and the trainer's checkpoint names.

The domain is natural language ("heart failure"); every name built from it uses its slug
("heart-failure"), so one domain always gives the same names. Versions are ``-v{X.Y}``.
"""

from __future__ import annotations

import re

_VERSION = re.compile(r"-v(\d+)\.(\d+)")


def slug(text: str) -> str:
    """``"Heart failure (adults)"`` → ``"heart-failure-adults"``: lowercase, runs of other characters → one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def adapter_stem(domain: str, use_case: str, method: str) -> str:
    """``{domain}-{use_case}-{method}``: what every version of the adapter is named after."""
    return f"{slug(domain)}-{slug(use_case)}-{method}"


def version_of(name: str | None, stem: str | None = None) -> tuple[int, int] | None:
    """``pregnancy-qa-lora-v1.2`` → (1, 2); None for the base model, an unversioned name, or another stem's."""
    if not name or not (match := _VERSION.search(name)) or match.end() != len(name):
        return None
    if stem is not None and name[:match.start()] != stem:
        return None
    return int(match[1]), int(match[2])


def version_label(name: str | None) -> str | None:
    """``pregnancy-qa-lora-v1.2`` → ``"1.2"`` (what the gateway reports), None when unversioned."""
    version = version_of(name)
    return f"{version[0]}.{version[1]}" if version else None


def next_version_name(existing: list[str], stem: str, bump: str) -> str:
    """``stem-v1.0`` first, then a minor (v1.1) or major (v2.0) bump of the highest of ``existing``."""
    versions = sorted(v for v in (version_of(name, stem) for name in existing) if v)
    if not versions:
        return f"{stem}-v1.0"
    major, minor = versions[-1]
    return f"{stem}-v{major + 1}.0" if bump == "major" else f"{stem}-v{major}.{minor + 1}"


def checkpoint_step(name: str) -> int | None:
    """``checkpoint-30`` (the trainer's folder name) → 30; None for any other name."""
    prefix, _, step = name.rpartition("-")
    return int(step) if prefix == "checkpoint" and step.isascii() and step.isdigit() else None
