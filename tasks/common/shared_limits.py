"""Limits shared by every run through a Prefect server (orchestration.download_concurrency_limit, llm_rate_limit):
checked before any work, since a limit that is missing, inactive or not a rate would share nothing."""

from __future__ import annotations

from core.config import ConfigError, PipelineConfig


def check_shared_limit(setting: str, name: str, rate: bool) -> None:
    """A shared limit only works on a Prefect server every run talks to, and only if it exists there."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    create = f"prefect gcl create {name} --limit N" + (" --slot-decay-per-second R (R requests/s)" if rate else "")
    api = PREFECT_API_URL.value()
    if not api:
        raise ConfigError(f"{setting}: '{name}' is shared through a Prefect server, and PREFECT_API_URL is not set "
                          "(a temporary server would share it with no one): point PREFECT_API_URL at your server, "
                          f"or set {setting}: null")
    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise ConfigError(f"{setting}: no global concurrency limit '{name}' on the Prefect server at {api}: "
                              f"create it with `{create}`") from None
    if not limit.active:
        raise ConfigError(f"{setting}: the limit '{name}' is inactive: `prefect gcl update {name} --enable`")
    if rate and not limit.slot_decay_per_second:
        raise ConfigError(f"{setting}: '{name}' has no slot decay, so it bounds concurrency, not a rate: "
                          f"`prefect gcl update {name} --slot-decay-per-second R`")


def download_limit_exists(config: PipelineConfig) -> None:
    if name := config.orchestration.download_concurrency_limit:
        check_shared_limit("orchestration.download_concurrency_limit", name, rate=False)


def llm_limit_exists(config: PipelineConfig) -> None:
    if name := config.orchestration.llm_rate_limit:
        check_shared_limit("orchestration.llm_rate_limit", name, rate=True)
