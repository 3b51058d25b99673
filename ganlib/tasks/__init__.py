"""The tasks: one module and one record (:class:`~ganlib.tasks.base.Task`) each.

:data:`TASKS` is the only place a task is looked up by its name (``task`` in params.yaml, the
``task`` of a checkpoint or an exported generator).
"""

from __future__ import annotations

from ganlib.errors import GanlibError
from ganlib.tasks import generation, inpainting, translation
from ganlib.tasks.base import Task

TASKS: dict[str, Task] = {t.name: t for t in (generation.TASK, inpainting.TASK, translation.TASK)}


def get_task(name: str) -> Task:
    """The record of the task ``name``; a one-line GanlibError for an unknown one."""
    if name not in TASKS:
        raise GanlibError(f"unknown task {name!r}; this ganlib knows {', '.join(TASKS)}")
    return TASKS[name]
