"""The MLflow pyfunc model of every registered version: the data as its user has it in, answers in the data's
terms out (shrinkflow.core.serving), around the variant's Keras, TFLite or ONNX file.

MLflow logs this file as "models from code": it copies it into the logged model and executes it under a
throw-away module name whenever the model is loaded. Its artifacts are the model file, the serving contract
(JSON) and the two self-contained modules that run them, `predictors.py` and `serving.py` from
shrinkflow.core; they are executed here under private names, so a model always runs the code it was logged
with and loads where shrinkflow is not installed. Importing this file as
`shrinkflow.tracking.served_pyfunc` has no side effects.
"""

import importlib.util
import json
from types import ModuleType
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel, PythonModelContext

MODEL_ARTIFACT = "model_file"
CONTRACT_ARTIFACT = "serving_contract"
PREDICTORS_ARTIFACT = "predictors_module"
SERVING_ARTIFACT = "serving_module"


class ServedPyfunc(PythonModel):
    """predict: a DataFrame (or dict of columns, or an array of samples for tensor input) of raw inputs ->
    a DataFrame of answers (see shrinkflow.core.serving)."""

    def load_context(self, context: PythonModelContext) -> None:
        predictors = _private_module(context.artifacts[PREDICTORS_ARTIFACT], "predictors")
        serving = _private_module(context.artifacts[SERVING_ARTIFACT], "serving")
        with open(context.artifacts[CONTRACT_ARTIFACT]) as file:
            contract = json.load(file)
        self._request_error = serving.RequestError
        self._model = serving.ServedModel(predictors.load_predictor(context.artifacts[MODEL_ARTIFACT]), contract)

    # Annotated as a DataFrame (an array for tensor input): a hint MLflow leaves alone; the logged signature checks.
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        try:
            return self._model.predict(model_input)
        except self._request_error as exc:  # the scoring server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(exc)) from None


def _private_module(path: str, name: str) -> ModuleType:
    """The module in `path`, executed under a name of its own (not in sys.modules): another model's copy, or an
    installed shrinkflow, never stands in for it."""
    spec = importlib.util.spec_from_file_location(f"_shrinkflow_served_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# MLflow executes this file as a top-level module (no package); `import shrinkflow.tracking.served_pyfunc`
# gives it the package "shrinkflow" and must not touch MLflow's global model slot.
if not __package__:
    set_model(ServedPyfunc())
