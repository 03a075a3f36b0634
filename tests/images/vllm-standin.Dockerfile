# A stand-in for vllm/vllm-openai (tests only): the fake vLLM behind vLLM's command line, so the compose
# file's vllm service runs unchanged on a machine without a GPU. Built by tests/test_containers.py.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir "aiohttp>=3.14,<4" "httpx>=0.28,<1"
WORKDIR /app
COPY harness/__init__.py harness/loopback.py harness/vllm.py harness/vllm_standin.py harness/
ENTRYPOINT ["/opt/venv/bin/python", "-m", "harness.vllm_standin"]
