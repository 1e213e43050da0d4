"""One row of `python -m common.bench.export_speed`: the transformer's native inference (TensorFlow, as `predict`
runs it) against its ONNX graph, exported as `python -m common export` does (a child process on Keras'
torch backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common.bench.export_speed import case_arguments, median_seconds, onnx_seconds, row


def main(argv=None) -> None:
    args = case_arguments("python -m tf_transformer.export_bench").parse_args(argv)
    from tf_transformer.startup import start_backend

    start_backend(verbose=False)
    import keras

    from tf_transformer.config import preset
    from tf_transformer.model import build_transformer
    from tf_transformer.train import predict_probabilities, set_threads

    set_threads(args.threads)
    keras.utils.set_random_seed(0)
    model = build_transformer(preset(args.preset).with_data(input_shape=(args.shape,) * 3, num_classes=2))
    x = np.random.default_rng(0).normal(size=(args.batch, *(args.shape,) * 3)).astype(np.float32)
    native = median_seconds(lambda: predict_probabilities(model, x, batch_size=args.batch))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "m.keras")
        code = ("import sys; from tf_transformer.export import export_keras_file; "
                "export_keras_file(sys.argv[1], sys.argv[2])")
        subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "m.keras"), str(Path(tmp) / "m.onnx")],
                       check=True, env={**os.environ, "KERAS_BACKEND": "torch"}, capture_output=True)
        onnx = onnx_seconds(Path(tmp) / "m.onnx", x[..., None], args.threads)
    print(json.dumps(row("Transformer", args.preset, args.shape, args.batch, args.threads,
                         f"keras {keras.__version__} {keras.backend.backend()}", native, onnx)))


if __name__ == "__main__":
    main()
