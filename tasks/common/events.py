"""The events that close the nightly loop, one home for their names: the refresh says whether retraining is due,
a registration says a version is ready to roll out. prefect.yaml's `triggers:` match these names and pass the
payload's ``config`` (the config file's path, as the worker sees it) to the deployment they start."""

from __future__ import annotations

from prefect.events import emit_event

from core.config import PipelineConfig

RETRAINING_DUE, RETRAINING_NOT_DUE = "domain-llm.retraining.due", "domain-llm.retraining.not-due"
VERSION_REGISTERED = "domain-llm.version.registered"


def announce(config: PipelineConfig, event: str, config_path: str, payload: dict) -> None:
    """``event`` on this project's resource (``domain-llm.project.<adapter stem>``), with the config's path."""
    emit_event(event=event, resource={"prefect.resource.id": f"domain-llm.project.{config.adapter_stem()}",
                                      "prefect.resource.name": f"{config.domain} {config.use_case}"},
               payload={**payload, "config": config_path})
