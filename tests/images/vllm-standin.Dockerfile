# A stand-in for vllm/vllm-openai (tests only): the fake vLLM behind vLLM's command line, so the compose
# file's vllm service runs unchanged on a machine without a GPU. Built by tests/test_containers.py.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir "aiohttp>=3.14,<4" "httpx>=0.28,<1"
WORKDIR /app
COPY tests/__init__.py tests/servers.py tests/vllm_standin.py tests/
ENTRYPOINT ["/opt/venv/bin/python", "-m", "tests.vllm_standin"]
