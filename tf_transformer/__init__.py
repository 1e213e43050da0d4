"""The seed's transformer (docs/design.md section 2) as a Keras 3 functional model, with its training and prediction.

Model code uses only keras.layers / keras.ops: it runs under KERAS_BACKEND=tensorflow (default) or torch,
the two backends the project installs and tests.
"""

from tf_transformer.config import PRESETS, TransformerConfig

__all__ = ["PRESETS", "TransformerConfig"]
