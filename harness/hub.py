"""The Hugging Face Hub's API for model repos (stage 5's registry)."""

from __future__ import annotations

from aiohttp import web

from harness.loopback import LoopbackServer


class FakeHub:
    """The Hugging Face Hub API as huggingface_hub 2.x uses it to list, create, commit to and download from model
    repos.

    ``/api/models`` (author/search/cardData), ``/api/repos/create``, ``/api/models/<repo>/preupload/<rev>``
    (every file "regular", so uploads are inline base64 in the commit) and ``/api/models/<repo>/commit/<rev>``
    (NDJSON), ``/<repo>/resolve/<rev>/<file>`` (HEAD for the commit, ETag and size; GET for the bytes). Bearer
    token checked on every call; repos and their files are kept in ``repos``.
    """

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, dict] = {}
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/models", self._list)
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        app.router.add_post("/api/models/{owner}/{name}/preupload/{revision}", self._preupload)
        app.router.add_post("/api/models/{owner}/{name}/commit/{revision}", self._commit)
        app.router.add_route("*", "/{owner}/{name}/resolve/{revision}/{path:.+}", self._resolve)
        self.server = LoopbackServer(app)

    def __enter__(self) -> FakeHub:
        self.server.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.__exit__(*exc_info)

    @property
    def url(self) -> str:
        return self.server.url

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "Invalid credentials in Authorization header"}, status=401)
        return None

    async def _list(self, request: web.Request) -> web.Response:
        from huggingface_hub import ModelCard

        if denied := self._denied(request):
            return denied
        author, search = request.query.get("author", ""), request.query.get("search", "")
        found = []
        for repo_id, repo in self.repos.items():
            owner = repo_id.split("/")[0]
            if (not author or owner == author) and search in repo_id:
                item = {"id": repo_id, "_id": repo_id, "private": repo["private"], "tags": []}
                if request.query.get("cardData") and "README.md" in repo["files"]:
                    item["cardData"] = ModelCard(repo["files"]["README.md"].decode()).data.to_dict()
                found.append(item)
        return web.json_response(found)

    async def _create(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
        if repo_id in self.repos:
            return web.json_response({"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"},
                                     status=409)
        self.repos[repo_id] = {"private": body.get("visibility", "public") == "private" or bool(body.get("private")),
                               "files": {}, "commits": []}
        return web.json_response({"url": f"{self.url}/{repo_id}", "name": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        import yaml

        content = (await request.json())["content"]
        try:
            metadata = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
        except yaml.YAMLError as error:
            return web.json_response({"errors": [{"message": f"invalid YAML: {error}"}]}, status=400)
        if not isinstance(metadata, dict):
            return web.json_response({"errors": [{"message": "metadata must be a mapping"}]}, status=400)
        return web.json_response({"warnings": [] if metadata else [{"message": "empty or missing yaml metadata"}]})

    async def _preupload(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        return web.json_response({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                            for f in body["files"]]})

    async def _commit(self, request: web.Request) -> web.Response:
        import base64
        import json as _json

        if denied := self._denied(request):
            return denied
        repo_id = f"{request.match_info['owner']}/{request.match_info['name']}"
        if repo_id not in self.repos:
            return web.json_response({"error": "Repository not found"}, status=404)
        summary, files = "", {}
        for line in (await request.read()).splitlines():
            entry = _json.loads(line)
            if entry["key"] == "header":
                summary = entry["value"]["summary"]
            elif entry["key"] == "file":
                files[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
        repo = self.repos[repo_id]
        repo["files"].update(files)
        oid = f"{len(repo['commits']) + 1:040x}"
        repo["commits"].append({"summary": summary, "files": sorted(files), "oid": oid})
        return web.json_response({"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None})

    async def _resolve(self, request: web.Request) -> web.Response:
        import hashlib

        if denied := self._denied(request):
            return denied
        repo = self.repos.get(f"{request.match_info['owner']}/{request.match_info['name']}")
        content = repo["files"].get(request.match_info["path"]) if repo and repo["commits"] else None
        if content is None:
            return web.json_response({"error": "Entry not found"}, status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": repo["commits"][-1]["oid"], "ETag": f'"{hashlib.sha256(content).hexdigest()}"',
                   "Content-Length": str(len(content))}
        return web.Response(body=None if request.method == "HEAD" else content, headers=headers)
