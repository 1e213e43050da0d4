"""Saliency for the ResNet: Grad-CAM on a residual stage, and the predict function occlusion calls.

Grad-CAM (Selvaraju et al. 2017) on `stages.layer5` by default, a stage at half the input resolution
(17^3 at 32^3 input). The last stage, `layer11`, is the textbook choice (the deepest features with a
grid) but is 5^3 at 32^3, 1/6.4 of the input per axis; on the demo's val lesions its peaks hit 0 of 8
(`small`) and 2 of 8 (`small_recipe`), layer5's 4 and 8 of 8, the most of any stage over both
(results/explain_demo/gradcam_layers.md, selected on val). `explain --gradcam-layer layerN` reads any stage.
channel weights = spatial mean of d(target logit)/d(activation); map = ReLU(sum over channels of
weight x activation), upsampled trilinearly to the model grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError
from common.explain.maps import positive_part, upsample
from common.explain.run import ModelHooks
from torch_resnet import checkpoints
from torch_resnet.model import ResNet3D, build_resnet
from torch_resnet.train import MODEL, predict_probabilities, to_model_input

GRADCAM_LAYER = "stages.layer5"  # the default; explain --gradcam-layer layerN reads another stage


def resolve_gradcam_layer(name: str | None) -> str:
    """The module Grad-CAM hooks: a stage output, `layer2`..`layer11` (or `stages.layerN`)."""
    if name is None:
        return GRADCAM_LAYER
    stage = name.removeprefix("stages.")
    if stage not in {f"layer{n}" for n in range(2, 12)}:
        raise ConfigError(f"--gradcam-layer {name}: the ResNet's Grad-CAM layers are its stage outputs, "
                          "layer2..layer11")
    return f"stages.{stage}"


def load_network(run_dir: Path, *, random_weights: bool = False, seed: int = 0) -> ResNet3D:
    """The selected weights, or (the sanity check) the same architecture freshly initialised."""
    payload, config = checkpoints.load_selected(run_dir)
    torch.manual_seed(seed)
    net = build_resnet(config)
    if not random_weights:
        net.load_state_dict(payload["state_dict"])
    return net.eval()


def gradcam(net: ResNet3D, volumes: np.ndarray, targets: np.ndarray, device: torch.device,
            layer_name: str = GRADCAM_LAYER) -> np.ndarray:
    """(B, D, H, W) volumes, (B,) class indices -> (B, D, H, W) Grad-CAM maps, fp32, eval mode."""
    layer = net.get_submodule(layer_name)
    saved = {}
    handle = layer.register_forward_hook(lambda module, args, output: saved.update(activation=output))
    try:
        x = to_model_input(np.asarray(volumes, dtype=np.float32), device, False)
        with torch.enable_grad():
            logits = net(x)
            activation = saved["activation"]  # (B, C, d, h, w)
            score = logits.gather(1, torch.as_tensor(targets, device=device).long()[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True)  # (B, C, 1, 1, 1)
    cam = (weights * activation).sum(dim=1).detach().cpu().numpy()  # (B, d, h, w)
    return np.stack([upsample(positive_part(c), volumes.shape[1:]) for c in cam])


def model_hooks(run_dir: Path, classes, *, device: torch.device, random_weights: bool = False,
                gradcam_layer: str | None = None) -> ModelHooks:
    layer = resolve_gradcam_layer(gradcam_layer)  # checked before the model is loaded
    return hooks_for(load_network(run_dir, random_weights=random_weights), classes, device, layer)


def hooks_for(net: ResNet3D, classes, device: torch.device, layer: str = GRADCAM_LAYER) -> ModelHooks:
    net = net.to(device).eval()

    def predict(volumes: np.ndarray) -> np.ndarray:  # fp32: maps compare best without autocast noise
        with torch.no_grad():
            return predict_probabilities(net, volumes, batch_size=len(volumes), precision="fp32", device=device,
                                         channels_last=False)

    return ModelHooks(MODEL, list(classes), predict, lambda v, t: gradcam(net, v, t, device, layer), layer)
