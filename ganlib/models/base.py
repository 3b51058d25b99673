"""What every ganlib network shares: a saved config derived from its constructor arguments,
and switching it to eval mode for a block.

A model class sets ``arch`` (its name in :data:`ganlib.models.MODELS`) and writes a plain
``__init__``; :class:`SavedConfig` records the arguments it was called with, defaults
applied, as ``self.config = {"arch": ..., **arguments}`` before the constructor body runs. A
checkpoint stores that dict next to the state dict, and
:func:`ganlib.models.build_generator` rebuilds the model from it without pickled code
(nanoGPT's and diffusers' way: the constructor arguments *are* the saved config).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
from collections.abc import Iterator
from typing import Any, ClassVar

from torch import nn


def _plain(value: Any) -> Any:
    """A JSON-safe copy of an argument (numpy scalars and tuples become plain values)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class SavedConfig(nn.Module):
    """A module whose ``config`` is its constructor's arguments, plus ``arch``.

    Subclasses must take only JSON-able arguments (numbers, strings, bools, lists), so that
    the config rebuilds the same network: ``type(m)(**without_arch(m.config))``.
    """

    arch: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            if type(self) is cls:  # the most derived class records its own arguments
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = {k: _plain(v) for k, v in list(bound.arguments.items())[1:]}
                arguments = cls.resolve_config(arguments)
                # Set before the body runs: constructors may read their own config.
                object.__setattr__(self, "config", {"arch": cls.arch, **arguments})
            init(self, *args, **kw)

        cls.__init__ = __init__

    @classmethod
    def resolve_config(cls, arguments: dict[str, Any]) -> dict[str, Any]:
        """The config to save for these constructor arguments; a model whose arguments have
        a convenience form (the U-Net's ``resolution`` for ``depth``) saves the resolved one."""
        return arguments


def without_arch(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config as constructor keyword arguments."""
    return {k: v for k, v in config.items() if k != "arch"}


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Run a block with ``module`` in eval mode and give it its previous mode back after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
