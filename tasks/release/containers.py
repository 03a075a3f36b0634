"""Serving containers through the Docker API, for stage 6's blue/green rollout.

Gateway containers are named and labelled with the adapter they serve and take turns on two
loopback ports; the edge (HAProxy, Dockerfile.edge) owns the public port and routes it to one
of them. A switch goes through HAProxy's runtime API: the idle server slot is pointed at the new
gateway and made ready, the old one put in maintenance, in one command. Nothing is reloaded, so
no client connection is closed; requests in flight finish on the old gateway. Everything runs on
the host network, so vLLM is reached where the config says and nothing needs publishing.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass

import httpx

ROLE = "domain-llm.role"          # gateway | edge
ADAPTER = "domain-llm.adapter"
VERSION = "domain-llm.version"
PORT = "domain-llm.port"
EDGE_NAME = "domain-llm-edge"
SECRETS_DIR = "/run/secrets"  # inside a gateway container
GATEWAY_UID = 10001           # the user Dockerfile.api runs as


class ContainerError(RuntimeError):
    """A serving container could not be started, become ready or be switched to; the message says why."""


@dataclass(frozen=True)
class Gateway:
    container: object  # docker.models.containers.Container
    port: int
    adapter: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.container.name


def connect(docker_host: str | None):
    """A client for ``docker_host`` (or DOCKER_HOST, or the local socket) that has answered a ping."""
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        where = docker_host or "DOCKER_HOST / the local socket"
        raise ContainerError(f"the Docker engine at {where} is not reachable ({error}): start it, or point "
                             "serving.docker_host (or DOCKER_HOST) at one") from None
    return client


def image(client, reference: str):
    import docker

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        raise ContainerError(f"no image {reference} on this engine: build it (scripts/run_pipeline.sh --build)") from None


def find_edge(client, listen: str, port: int):
    """The running edge on ``listen``:``port``, or None. A stopped one, or one listening elsewhere (serving.host or
    serving.port changed), is removed: it is recreated pointing at the new gateway."""
    wanted = {f"LISTEN_ADDRESS={listen}", f"LISTEN_PORT={port}"}
    for container in client.containers.list(all=True, filters={"label": f"{ROLE}=edge"}):
        if container.status == "running" and wanted <= set(container.attrs["Config"]["Env"] or ()):
            return container
        container.remove(force=True)
    return None


def _edge_api(edge, command: str) -> str:
    result = edge.exec_run(["edge.sh", "api", command])
    if result.exit_code != 0:
        raise ContainerError(f"the edge's runtime API failed ({command}): {result.output.decode(errors='replace')}")
    return result.output.decode(errors="replace")


def _slots(edge) -> dict[str, dict]:
    """The edge's two server slots: the port each points at, whether it takes requests, its requests in flight."""
    header, *rows = _edge_api(edge, "show stat").strip().splitlines()
    names = header.lstrip("# ").split(",")
    slots = {}
    for row in csv.reader(rows):
        stat = dict(zip(names, row, strict=False))
        if stat["pxname"] == "gateways" and stat["svname"] in ("a", "b"):
            slots[stat["svname"]] = {"port": int(stat["addr"].rsplit(":", 1)[1]), "serving": stat["status"] != "MAINT",
                                     "in_flight": int(stat["scur"] or 0)}
    return slots


def served_port(edge) -> int | None:
    serving = [slot["port"] for slot in _slots(edge).values() if slot["serving"]]
    return serving[0] if len(serving) == 1 else None


def running_gateways(client) -> dict[int, Gateway]:
    return {int(c.labels[PORT]): Gateway(c, int(c.labels[PORT]), c.labels[ADAPTER])
            for c in client.containers.list(filters={"label": f"{ROLE}=gateway", "status": "running"})}


def clear_for(client, port: int, keep: Gateway | None) -> None:
    """Remove what an earlier rollout left: stopped gateways (kept until now for `docker logs`), any on ``port``, and,
    with nothing to keep (no edge serves one), every gateway: none of them is reachable."""
    for container in client.containers.list(all=True, filters={"label": f"{ROLE}=gateway"}):
        if keep is not None and container.id == keep.container.id:
            continue
        if keep is None or container.status != "running" or int(container.labels[PORT]) == port:
            container.remove(force=True)


def start_gateway(client, gateway_image, adapter: str, version: str | None, port: int,
                  environment: dict[str, str], tokens: dict[str, str]) -> Gateway:
    """Named for the adapter and the port: the same adapter on a new gateway image runs beside the old one.

    ``tokens`` ({"API_TOKEN": ..., "ADMIN_TOKEN": ...}) are written into the container before it
    starts, as files only its user can read, and named by *_FILE variables: `docker inspect`
    shows where they are, never what they are.
    """
    files = {f"{name.lower()}": value for name, value in tokens.items()}
    container = client.containers.create(
        gateway_image.id, detach=True, name=f"domain-llm-gateway-{adapter}-{port}", network_mode="host",
        labels={ROLE: "gateway", ADAPTER: adapter, VERSION: version or "", PORT: str(port)},
        environment={**environment, "HOST": "127.0.0.1", "PORT": str(port),
                     **{f"{name}_FILE": f"{SECRETS_DIR}/{name.lower()}" for name in tokens}},
        restart_policy={"Name": "unless-stopped"})
    if files and not container.put_archive(SECRETS_DIR.rsplit("/", 1)[0], _secrets_tar(files)):
        container.remove(force=True)
        raise ContainerError(f"could not write the tokens into {container.name}")
    container.start()
    return Gateway(container, port, adapter)


def _secrets_tar(files: dict[str, str]) -> bytes:
    """A tar of SECRETS_DIR holding ``files``, owned by the gateway image's user, mode 0700/0400."""
    import io
    import tarfile

    buffer = io.BytesIO()
    folder = SECRETS_DIR.rsplit("/", 1)[1]
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo(folder)
        entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, 0o700, GATEWAY_UID, GATEWAY_UID
        tar.addfile(entry)
        for name, value in files.items():
            data = value.encode()
            entry = tarfile.TarInfo(f"{folder}/{name}")
            entry.size, entry.mode, entry.uid, entry.gid = len(data), 0o400, GATEWAY_UID, GATEWAY_UID
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def wait_ready(gateway: Gateway, timeout_s: float) -> None:
    """Until /ready says the adapter is loaded and a first request went through; fails early when it cannot be."""
    deadline, last = time.monotonic() + timeout_s, "no answer yet"
    while time.monotonic() < deadline:
        gateway.container.reload()
        if gateway.container.status not in ("created", "running"):
            raise ContainerError(f"{gateway.name} stopped ({gateway.container.status}): {_tail(gateway.container)}")
        try:
            reply = httpx.get(f"{gateway.url}/ready", timeout=5)
            if reply.status_code == 200:
                return
            body = reply.json()
            if body.get("warmup_error"):
                raise ContainerError(f"{gateway.name} could not warm up: {body['warmup_error']}")
            last = f"/ready {reply.status_code}: {body}"
        except httpx.TransportError as error:
            last = f"{type(error).__name__}"
        time.sleep(0.5)
    raise ContainerError(f"{gateway.name} not ready after {timeout_s:g} s ({last}): {_tail(gateway.container)}")


def start_edge(client, edge_image, listen: str, port: int, upstream: int, proxy_timeout_s: float):
    return client.containers.run(
        edge_image.id, detach=True, name=EDGE_NAME, network_mode="host", labels={ROLE: "edge"},
        environment={"LISTEN_ADDRESS": listen, "LISTEN_PORT": str(port), "UPSTREAM_PORT": str(upstream),
                     "PROXY_TIMEOUT_S": str(int(proxy_timeout_s))},
        restart_policy={"Name": "unless-stopped"})


def switch_edge(edge, public_url: str, port: int, timeout_s: float) -> None:
    """Route new requests to ``port``; return once the edge answers from it and the old slot has nothing in flight."""
    slots = _slots(edge)
    active = next((name for name, slot in slots.items() if slot["serving"]), None)
    spare = "b" if active == "a" else "a"
    commands = [f"set server gateways/{spare} addr 127.0.0.1 port {port}", f"set server gateways/{spare} state ready"]
    if active is not None:
        commands.append(f"set server gateways/{active} state maint")
    reply = _edge_api(edge, "; ".join(commands))
    after = _slots(edge)
    if not (after[spare]["serving"] and after[spare]["port"] == port and (active is None or not after[active]["serving"])):
        raise ContainerError(f"the edge did not switch to port {port}: {reply.strip()}")
    deadline = time.monotonic() + timeout_s
    wait_edge(edge, public_url, port, timeout_s)
    while active is not None and _slots(edge)[active]["in_flight"]:
        if time.monotonic() > deadline:
            raise ContainerError(f"requests on the old gateway still in flight after {timeout_s:g} s")
        time.sleep(0.1)


def wait_edge(edge, public_url: str, upstream: int, timeout_s: float) -> None:
    """Until a request to ``public_url`` is answered by the gateway on port ``upstream``."""
    deadline = time.monotonic() + timeout_s
    while not _routes_to(public_url, f"127.0.0.1:{upstream}"):
        edge.reload()
        if edge.status != "running" or time.monotonic() > deadline:
            raise ContainerError(f"the edge does not route {public_url} to port {upstream} after {timeout_s:g} s: "
                                 f"{_tail(edge)}")
        time.sleep(0.1)


def _routes_to(public_url: str, upstream: str) -> bool:
    try:
        return httpx.get(f"{public_url.rstrip('/')}/health", timeout=5).headers.get("x-upstream") == upstream
    except httpx.TransportError:
        return False


def _tail(container, lines: int = 15) -> str:
    return container.logs(tail=lines).decode(errors="replace").strip() or "(no output)"
