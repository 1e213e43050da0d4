"""One row of `python -m common.bench.export_speed`: the ResNet's native torch inference against its ONNX graph."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from common.bench.export_speed import case_arguments, median_seconds, onnx_seconds, row
from torch_resnet.config import preset
from torch_resnet.export import export_network
from torch_resnet.model import build_resnet


def main(argv=None) -> None:
    args = case_arguments("python -m torch_resnet.export_bench").parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = preset(args.preset).with_data(input_shape=(args.shape,) * 3, num_classes=2)
    net = build_resnet(config).eval()
    x = np.random.default_rng(0).normal(size=(args.batch, 1, *config.input_shape)).astype(np.float32)
    with torch.inference_mode():
        native = median_seconds(lambda: net(torch.from_numpy(x)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export_network(net, torch.from_numpy(x), path)  # the exporter of `python -m common export`
        onnx = onnx_seconds(path, x, args.threads)
    print(json.dumps(row("ResNet", args.preset, args.shape, args.batch, args.threads,
                         f"torch {torch.__version__} eager", native, onnx)))


if __name__ == "__main__":
    main()
