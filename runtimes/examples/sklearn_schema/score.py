"""sklearn regression entry script with inference-schema decorators (the seed document's example).

The model file `sklearn_regression_model.pkl` is found through Model.get_model_path, which resolves
under AZUREML_MODEL_DIR inside the runtime.
"""

import joblib
import numpy as np
from azureml.core.model import Model
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

model = None


def init():
    """Load the model once."""
    global model
    model = joblib.load(Model.get_model_path("sklearn_regression_model.pkl"))


input_sample = np.array([[10, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
output_sample = np.array([3726.995])


@input_schema("data", NumpyParameterType(input_sample))
@output_schema(NumpyParameterType(output_sample))
def run(data):
    """Predict for each row of `data` (already a numpy array, converted by inference-schema)."""
    result = model.predict(data)
    return result.tolist()
