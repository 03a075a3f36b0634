"""Benchmark: image builds with a cold cache vs a warm one after a code-only change, and image sizes.

    .venv/bin/python -m bench.images [--gpu]

Both Dockerfiles install dependencies before copying the code, so a change to the code alone
should rebuild only the last layers. Builds run on the project's private engine
(scripts/docker_engine.sh, started and stopped here when not running) on the local base image.
The code change is made in a copy of the build context, never in this checkout.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness.docker import DockerEngine, cpu_torch_buildargs
from harness.project import REPO


def build(client, context: Path, dockerfile: str, tag: str, nocache: bool, buildargs: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    image, _ = client.images.build(path=str(context), dockerfile=dockerfile, tag=tag, rm=True, network_mode="host",
                                   nocache=nocache, buildargs={"BASE_IMAGE": DockerEngine.BASE_IMAGE, **buildargs})
    return time.perf_counter() - started, image.attrs["Size"]


def main() -> None:
    import docker

    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="also the training image (about 2 GB of wheels)")
    args = parser.parse_args()
    images = [("Dockerfile.api", "domain-llm-gateway:bench", "serving/app.py")]
    if args.gpu:
        images.append(("Dockerfile.gpu", "domain-llm-train:bench", "flows/pipeline.py"))

    with DockerEngine() as engine, tempfile.TemporaryDirectory() as tmp, cpu_torch_buildargs() as torch_source:
        client = docker.DockerClient(base_url=engine.host, timeout=1200)
        context = Path(tmp) / "context"
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
        for name in files:
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, context / name)
        base_size = client.images.get(DockerEngine.BASE_IMAGE).attrs["Size"]
        print(f"image builds on {DockerEngine.BASE_IMAGE} ({base_size / 1e6:.0f} MB)")
        for dockerfile, tag, code_file in images:
            buildargs = torch_source if dockerfile == "Dockerfile.gpu" else {}
            cold, size = build(client, context, dockerfile, tag, nocache=True, buildargs=buildargs)
            with (context / code_file).open("a") as handle:
                handle.write(f"\n# code-only change {time.time()}\n")
            warm, _ = build(client, context, dockerfile, tag, nocache=False, buildargs=buildargs)
            print(f"  {dockerfile:<15} cold {cold:7.1f} s   warm after a code change {warm:6.1f} s   "
                  f"speed-up {cold / warm:5.1f}x   size {size / 1e6:6.0f} MB ({(size - base_size) / 1e6:.0f} MB over the base)")
        client.close()


if __name__ == "__main__":
    main()
