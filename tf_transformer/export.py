"""`python -m tf_transformer export`: each run's model.keras as an ONNX graph, input (B, D, H, W, 1) float32
with a dynamic batch, output logits (B, N).

The model is loaded under Keras' torch backend (the weights in a .keras file are backend-agnostic and
the model uses keras.ops only) and exported by torch.onnx's dynamo exporter: Keras' own ONNX export on
TensorFlow (tf2onnx 1.17) wrote GELU as an `Erfc` node that onnxruntime 1.32 refuses, and on torch it
takes torch's legacy exporter, which fails on the channels-last kernels. The CLI sets KERAS_BACKEND=torch for
this command before Keras is imported."""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import torch

INPUT_LAYOUT = "NDHWC"  # (batch, D, H, W, channel)


class _Inference(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, volume):
        return self.model(volume, training=False)


def export_run(run_dir: Path, out: Path) -> None:
    if keras.backend.backend() != "torch":
        raise RuntimeError("the transformer's ONNX export runs on Keras' torch backend (KERAS_BACKEND=torch)")
    from tf_transformer.predict import load_selected_model
    from tf_transformer.train import MODEL_FILE

    model = load_selected_model(Path(run_dir) / MODEL_FILE)
    shape = tuple(int(s) for s in model.inputs[0].shape[1:])
    example = torch.zeros(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Inference(model).eval(), (example,), str(out), input_names=["volume"],
                          output_names=["logits"], dynamic_shapes={"volume": {0: batch}}, dynamo=True,
                          external_data=False, verbose=False)
