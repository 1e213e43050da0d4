"""The seed's 3D ResNet (docs/design.md section 3) and its training recipe (config fields after `pooling`).

    stem:      Conv3d(C, 32, 3, 1, 1) -> MaxPool3d(2, 1, 1) -> BatchNorm3d -> ReLU     # (B, 32, D+1, H+1, W+1)
               (stem_strides=(2, 2): [Conv3d(3, s2, p1) -> BN -> ReLU] x 2            # (B, 32, D/4, H/4, W/4))
    layer2-11: two ResBlocks each; layers 4, 7, 10 start with a Downsample block       # halves D, H, W thrice
    pool:      AvgPool3d(2)                                                             # (B, 32, d, h, w)
               (pooling="mean", not the seed: global average pooling                   # (B, 32, 1, 1, 1))
    head:      Flatten -> Linear(F, 256) -> ReLU -> Linear(256, 256) -> ReLU -> Linear(256, N)   # logits
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.runs.presets import require_data
from torch_resnet.config import ResNetConfig


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, *, bias: bool = True) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a sample's residual branch with probability p and scale the
    kept ones by 1 / (1 - p), so the expected branch is unchanged; identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class ResBlock(nn.Module):
    """branch_relu=True (the seed): ReLU(ReLU(BN(conv(ReLU(BN(conv(x)))))) + shortcut(x)).
    branch_relu=False (torchvision's post-activation block): ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)).

    downsample=True: the first conv has stride 2 and the shortcut is BN(Conv3d(k1, s2, p0)(x)).
    downsample=False: the seed's "Upsample" block, an identity shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool, branch_relu: bool = True,
                 conv_bias: bool = True, avg_down: bool = False, drop_path: float = 0.0):
        super().__init__()
        stride = 2 if downsample else 1
        self.branch_relu = branch_relu
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias=conv_bias)
        self.bn1 = nn.BatchNorm3d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels, bias=conv_bias)
        self.bn2 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()
        if downsample and avg_down:  # ceil_mode: the same ceil(n / 2) grid as the stride-2 main path
            self.shortcut = nn.Sequential(
                nn.AvgPool3d(kernel_size=2, stride=2, ceil_mode=True, count_include_pad=False),
                nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=conv_bias), nn.BatchNorm3d(out_channels))
        elif downsample:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=2, padding=0, bias=conv_bias),
                nn.BatchNorm3d(out_channels))
        else:
            if in_channels != out_channels:
                raise ValueError(f"identity block needs in_channels == out_channels, got {in_channels}, {out_channels}")
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.relu(self.bn1(self.conv1(x)))
        main = self.bn2(self.conv2(main))
        if self.branch_relu:
            main = self.relu(main)
        return self.relu(self.drop_path(main) + self.shortcut(x))


def build_stem(config: ResNetConfig) -> nn.Sequential:
    """The seed's stem (full resolution, +1 per axis), or one strided 3^3 Conv -> BN -> ReLU per stem stride."""
    f, bias = config.filters, config.conv_bias
    if not config.stem_strides:
        return nn.Sequential(
            nn.Conv3d(config.in_channels, f, kernel_size=3, stride=1, padding=1, bias=bias),
            nn.MaxPool3d(kernel_size=2, stride=1, padding=1),
            nn.BatchNorm3d(f),
            nn.ReLU(inplace=True),
        )
    layers: list[nn.Module] = []
    channels = config.in_channels
    for stride in config.stem_strides:
        layers += [conv3x3(channels, f, stride, bias=bias), nn.BatchNorm3d(f), nn.ReLU(inplace=True)]
        channels = f
    return nn.Sequential(*layers)


class MeanMaxPool(nn.Module):
    """(B, C, d, h, w) -> (B, 2C, 1, 1, 1): global mean and global max, concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3, 4), keepdim=True), x.amax(dim=(2, 3, 4), keepdim=True)], dim=1)


def build_pool(pooling: str) -> nn.Module:
    return {"flatten": lambda: nn.AvgPool3d(kernel_size=2), "mean": lambda: nn.AdaptiveAvgPool3d(1),
            "max": lambda: nn.AdaptiveMaxPool3d(1), "mean_max": MeanMaxPool}[pooling]()


def build_head(config: ResNetConfig) -> nn.Sequential:
    """Flatten -> the seed's MLP F -> hidden -> hidden -> N (ReLU between), or Linear(F, N) when hidden_units=0."""
    if config.hidden_units == 0:
        return nn.Sequential(nn.Flatten(), nn.Linear(config.flatten_features, config.num_classes))
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(config.flatten_features, config.hidden_units),
        nn.ReLU(inplace=True),
        nn.Linear(config.hidden_units, config.hidden_units),
        nn.ReLU(inplace=True),
        nn.Linear(config.hidden_units, config.num_classes),
    )


class ResNet3D(nn.Module):
    def __init__(self, config: ResNetConfig, *, activation_checkpointing: bool = False):
        super().__init__()
        self.config = config
        self.activation_checkpointing = activation_checkpointing
        f = config.filters
        self.stem = build_stem(config)
        # Stochastic depth grows linearly over the 20 blocks: 0 in the first, drop_path in the last.
        rates = iter(config.drop_path * i / 19 for i in range(20))
        block = dict(branch_relu=config.branch_relu, conv_bias=config.conv_bias, avg_down=config.avg_down)
        self.stages = nn.ModuleDict({
            f"layer{n}": nn.Sequential(
                ResBlock(f, f, downsample=n in config.downsample_layers, drop_path=next(rates), **block),
                ResBlock(f, f, downsample=False, drop_path=next(rates), **block))
            for n in range(2, 12)
        })
        self.pool = build_pool(config.pooling)
        self.head = build_head(config)
        if config.kaiming_init:
            for module in self.modules():
                if isinstance(module, nn.Conv3d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if config.zero_init_residual:
            for module in self.modules():
                if isinstance(module, ResBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, D, H, W) -> logits (B, N)."""
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            x = self.stem(x)
            for stage in self.stages.values():
                x = stage(x)
            return self.head(self.pool(x))
        # Activation checkpointing, two levels: forward keeps only each stage's input; backward
        # recomputes one stage at a time, itself checkpointed per block, so at most one block's
        # activations are alive at once. (One level per stage or per block peaks about 1.3-1.6x higher.)
        x = checkpoint(self.stem, x, use_reentrant=False)
        for stage in self.stages.values():
            x = checkpoint(_run_blocks_checkpointed, stage, x, use_reentrant=False)
        return self.head(self.pool(x))


def _run_blocks_checkpointed(stage: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    for block in stage:
        x = checkpoint(block, x, use_reentrant=False)
    return x


def build_resnet(config: ResNetConfig, *, activation_checkpointing: bool = False) -> ResNet3D:
    require_data(config)  # a preset alone has no shape: config.with_data(input_shape=..., num_classes=...)
    return ResNet3D(config, activation_checkpointing=activation_checkpointing)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_sample(config: ResNetConfig) -> int:
    """Forward FLOPs of one sample, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build_resnet(config).eval()  # eval: BatchNorm accepts one sample on a 1^3 grid
        x = torch.empty(1, config.in_channels, *config.input_shape)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return int(counter.get_total_flops())
