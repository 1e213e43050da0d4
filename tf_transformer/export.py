"""`python -m tf_transformer export`: each run's model.keras as an ONNX graph, input (B, D, H, W, 1) float32
with a dynamic batch, output logits (B, N).

The model is loaded under Keras' torch backend (the weights in a .keras file are backend-agnostic and
the model uses keras.ops only) and exported by torch.onnx's dynamo exporter: Keras' own ONNX export on
TensorFlow (tf2onnx 1.17) wrote GELU as an `Erfc` node that onnxruntime 1.32 refuses, and on torch it
takes torch's legacy exporter, which fails on the channels-last kernels. The CLI sets KERAS_BACKEND=torch for
this command before Keras is imported."""

from __future__ import annotations

from pathlib import Path

import keras

INPUT_LAYOUT = "NDHWC"  # (batch, D, H, W, channel)


def export_keras_file(model_file: Path, out: Path) -> None:
    from tf_transformer.model_file import load_selected_model

    export_model(load_selected_model(Path(model_file)), out)


def export_model(model: keras.Model, out: Path) -> None:
    if keras.backend.backend() != "torch":
        raise RuntimeError("the transformer's ONNX export runs on Keras' torch backend (KERAS_BACKEND=torch)")
    import warnings

    import torch

    class Inference(torch.nn.Module):  # the Keras model (a torch Module on this backend) in inference mode
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, volume):
            return self.model(volume, training=False)

    example = torch.zeros(2, *(int(s) for s in model.inputs[0].shape[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Inference(model).eval(), (example,), str(out), input_names=["volume"], output_names=["logits"],
                          dynamic_shapes={"volume": {0: torch.export.Dim("batch", min=1, max=4096)}}, dynamo=True,
                          external_data=False, verbose=False)


def export_run(run_dir: Path, out: Path) -> None:
    from tf_transformer.predict import load_run_model

    export_model(load_run_model(Path(run_dir)), out)  # checked against the run's config.json
