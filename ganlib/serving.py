"""The registered generator's MLflow "models from code" file (see ``ganlib.registry``).

MLflow copies this file into the logged model and runs it at load time; the weights come from
the model's ``generator`` artifact (an exported generator directory), read as data. Nothing is
pickled. Output: ``uint8 [N, H, W, C]``, one image per row. Input: the generator's task's
(:meth:`ganlib.tasks.base.Task.predict`):

- generation: an int ``seed`` column and, for conditional generators, an optional int
  ``label`` column;
- inpainting: ``image`` and ``mask`` columns of PNG bytes (mask white = hole), any size
  (:func:`ganlib.tasks.inpainting.predict_frame`);
- translation: an ``image`` column of PNG bytes and, for CycleGAN, an optional ``direction``
  (``AtoB`` by default, or ``BtoA``) (:func:`ganlib.tasks.translation.predict_frame`).

Each request is bounded by the model's :class:`~ganlib.tasks.base.Limits` (rows, pixels per
image, pixels per request): its pyfunc ``model_config``, written at registration
(:func:`ganlib.registry.log_generator`), the task's defaults where the model has none.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

from ganlib.artifacts import load_generator
from ganlib.errors import GanlibError
from ganlib.tasks import get_task


class GeneratorModel(PythonModel):
    """A pyfunc that rebuilds G_ema from its exported directory and runs it for its task."""

    def load_context(self, context) -> None:
        self.G, self.meta = load_generator(context.artifacts["generator"])
        self.task = get_task(self.meta["task"])
        self.limits = self.task.limits.override(context.model_config)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """``model_input``: the task's DataFrame (see the module docstring) ->
        ``uint8 [N, H, W, C]``."""
        try:
            return self.task.predict(self.G, self.meta, model_input, self.limits)
        except GanlibError as exc:  # the scoring server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(exc)) from None


mlflow.models.set_model(GeneratorModel())
