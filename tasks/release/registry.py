"""Where adapters are published: the Hugging Face Hub, or a local folder with the same rules.

Both name versions ``{domain}-{use_case}-{method}-v{X.Y}`` and record the adapter's weight
hash in the model card metadata, so a rerun with unchanged weights is recognised as already
published instead of minting a new version.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Protocol

from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from core.files import atomic_folder


class Registry(Protocol):
    def published(self, prefix: str) -> dict[str, str | None]:
        """Names starting with ``prefix`` → the adapter hash in their card (None when it has none)."""

    def publish(self, name: str, folder: Path, message: str) -> str:
        """Publish the files of ``folder`` as ``name``; returns its location."""

    def location(self, name: str) -> str:
        """Where version ``name`` lives: a folder, or the repo's URL."""


def publish_version(registry: Registry, name: str, adapter: Path, files: tuple[str, ...], card: str,
                    message: str) -> str:
    """Publish ``files`` of ``adapter`` with ``card`` as README.md under ``name``; returns its location.

    The files are gathered in a staging folder first, so the registry receives exactly them, and that folder
    never outlives the call.
    """
    staging = Path(tempfile.mkdtemp(prefix="register-"))
    try:
        for file in files:
            shutil.copy2(adapter / file, staging / file)
        (staging / "README.md").write_text(card, encoding="utf-8")
        return registry.publish(name, staging, message)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class LocalRegistry:
    """``<folder>/<name>/``: the adapter files and README.md, moved into place whole (never half-written)."""

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
                shutil.copy2(path, staging / path.name)
        return self.location(name)

    def location(self, name: str) -> str:
        return str(self.folder / name)


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
