"""The serving gateway: a FastAPI app in front of vLLM (or an in-process model), with metrics and logs.

Stands alone from the pipeline: it reads its own settings (``serving.settings``) and shares
only the system prompt and prompt building with evaluation, so served answers match 4d's.
"""
