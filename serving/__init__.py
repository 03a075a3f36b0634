"""The serving gateway: a FastAPI app in front of vLLM (or an in-process model), with metrics and logs.

Stands alone from the pipeline: it imports only ``core``, for its settings (``core.gateway``, which
stage 6 also uses to start gateway containers) and the system prompt and prompt building it shares
with evaluation, so served answers match 4d's.
"""
