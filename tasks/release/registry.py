"""Where adapters are published: the Hugging Face Hub, or a local folder with the same rules.

Both name versions ``{domain}-{use_case}-{method}-v{X.Y}`` and record the adapter's weight
hash in the model card metadata, so a rerun with unchanged weights is recognised as already
published instead of minting a new version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from core import results
from core.config import ConfigError, PipelineConfig, Secrets
from core.files import atomic_folder, sha256_file
from core.results import Registration


class Registry(Protocol):
    def published(self, prefix: str) -> dict[str, str | None]:
        """Names starting with ``prefix`` → the adapter hash in their card (None when it has none)."""

    def publish(self, name: str, folder: Path, message: str) -> str:
        """Publish the files of ``folder`` as ``name``; returns its location."""

    def location(self, name: str) -> str:
        """Where version ``name`` lives: a folder, or the repo's URL."""

    def fetch(self, name: str, files: tuple[str, ...]) -> Path:
        """A folder on this machine holding ``files`` of version ``name`` (downloaded when the registry is remote)."""


def place(source: Path, target: Path) -> None:
    """``source`` (a file or a folder) at ``target`` as hard links where the file system allows (exports are large
    and published once), else as copies. A published file is never written to, so a link is as good as a copy."""
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            place(path, target / path.name)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def publish_version(registry: Registry, name: str, adapter: Path, files: tuple[str, ...], card: str,
                    message: str, exports: Path | None = None) -> str:
    """Publish ``files`` of ``adapter``, what ``exports`` holds (its hidden files left out) and ``card`` as README.md
    under ``name``; returns its location.

    The files are gathered in a staging folder first (beside ``exports``, so they link), so the registry receives
    exactly them, and that folder never outlives the call; nor does ``exports``, once published (kept when the
    registry failed: a rerun resumes from it).
    """
    staging = Path(tempfile.mkdtemp(prefix=".register-", dir=exports.parent if exports else None))
    try:
        for file in files:
            shutil.copy2(adapter / file, staging / file)
        for path in sorted(exports.iterdir()) if exports else ():
            if not path.name.startswith("."):
                place(path, staging / path.name)
        (staging / "README.md").write_text(card, encoding="utf-8")
        location = registry.publish(name, staging, message)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if exports:
        shutil.rmtree(exports, ignore_errors=True)
    return location


class LocalRegistry:
    """``<folder>/<name>/``: the adapter files, its exports and README.md, moved into place whole (never
    half-written)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def published(self, prefix: str) -> dict[str, str | None]:
        if not self.folder.is_dir():
            return {}
        return {entry.name: ModelCard.load(entry / "README.md").data.to_dict().get("adapter_sha256")
                for entry in sorted(self.folder.iterdir())
                if entry.name.startswith(prefix) and (entry / "README.md").is_file()}

    def publish(self, name: str, folder: Path, message: str) -> str:
        with atomic_folder(self.folder / name, replace=False) as staging:  # a registered version is never overwritten
            for path in folder.iterdir():
                place(path, staging / path.name)
        return self.location(name)

    def location(self, name: str) -> str:
        return str(self.folder / name)

    def fetch(self, name: str, files: tuple[str, ...]) -> Path:
        return self.folder / name


class RegistryError(RuntimeError):
    """The registry refused a request; the message says which and what to check."""


class HubRegistry:
    """Model repos ``<owner>/<name>`` on the Hub (or any server speaking its API, via ``endpoint``)."""

    def __init__(self, owner: str, token: str, endpoint: str, private: bool) -> None:
        self.owner, self.private, self.endpoint = owner, private, endpoint.rstrip("/")
        self.api = HfApi(endpoint=self.endpoint, token=token)

    def _refused(self, action: str, error: HfHubHTTPError) -> RegistryError:
        status = error.response.status_code if error.response is not None else "?"
        hint = (f": check that HF_TOKEN is valid and may write to '{self.owner}'" if status in (401, 403) else "")
        return RegistryError(f"the Hub at {self.endpoint} refused to {action} (HTTP {status}){hint}")

    def published(self, prefix: str) -> dict[str, str | None]:
        found = {}
        try:
            for model in self.api.list_models(author=self.owner, search=prefix, cardData=True):
                name = model.id.split("/", 1)[-1]
                if name.startswith(prefix):
                    card = model.card_data.to_dict() if model.card_data else {}
                    found[name] = card.get("adapter_sha256")
        except HfHubHTTPError as error:
            raise self._refused(f"list {self.owner}'s models", error) from None
        return found

    def publish(self, name: str, folder: Path, message: str) -> str:
        repo_id = f"{self.owner}/{name}"
        try:
            self.api.create_repo(repo_id, private=self.private, exist_ok=True)
            # one commit with every file: a version is never visible half-uploaded
            self.api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
        except HfHubHTTPError as error:
            raise self._refused(f"publish {repo_id}", error) from None
        return self.location(name)

    def location(self, name: str) -> str:
        return f"{self.endpoint}/{self.owner}/{name}"

    def fetch(self, name: str, files: tuple[str, ...]) -> Path:
        """Into the Hugging Face cache (HF_HOME), where a file already there at the repo's commit is not fetched again."""
        repo_id = f"{self.owner}/{name}"
        try:
            paths = [hf_hub_download(repo_id, file, endpoint=self.endpoint, token=self.api.token) for file in files]
        except HfHubHTTPError as error:
            raise self._refused(f"download {repo_id}", error) from None
        return Path(paths[0]).parent


def make_registry(config: PipelineConfig) -> Registry:
    """The configured registry; the Hub's needs its owner and token, named when missing (stage 5's preflight)."""
    r = config.registration
    if r.target == "local":
        return LocalRegistry(config.path(config.paths.registry))
    secrets = Secrets()
    token = secrets.require("hf_token", "registration.target: hub", "use registration.target: local")
    owner = r.hf_username or secrets.hf_username
    if not owner:
        raise ConfigError("registration.target: hub needs the repo owner: set registration.hf_username "
                          "or HF_USERNAME, or use registration.target: local")
    return HubRegistry(owner, token.get_secret_value(), r.hub_url, r.private)


def serving_version(config: PipelineConfig, adapter: Path, files: tuple[str, ...]) -> tuple[str, Path] | None:
    """The version stage 5 registered last, its ``files`` (the weights first: their hash is the one registered)
    fetched from its registry, when its weights are not ``adapter``'s: what a new candidate is compared with. None
    before the first registration, or when it was registered elsewhere than ``registration.target`` says now."""
    previous = results.read_if_present(config, Registration)
    if (previous is None or previous.target != config.registration.target
            or previous.adapter_sha256 == sha256_file(adapter / files[0])):
        return None
    folder = make_registry(config).fetch(previous.name, files)
    return (previous.name, folder) if all((folder / file).is_file() for file in files) else None
