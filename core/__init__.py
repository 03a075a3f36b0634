"""What the pipeline and the gateway share: the config model, the prompt, names, the stage-artifact contract.

It depends on nothing else in the project, so the gateway (``serving``) can stand on it alone.
"""
