"""The experiment's way to start the real stack on free ports (see ``stack.ephemeral``)."""

from stack.ephemeral import running_stack, stack_config

__all__ = ["running_stack", "stack_config"]
