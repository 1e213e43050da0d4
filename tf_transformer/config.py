"""Transformer configuration and the preset registry (docs/design.md section 2, decisions 1-4)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from common.errors import ConfigError
from common.runs.presets import canonical_preset, check_data_binding, require_data


@dataclass(frozen=True, kw_only=True)
class TransformerConfig:
    # The data's facts, not the architecture's: a preset leaves them unset and `with_data` binds them from
    # --shape and the dataset's classes before a network is built (tokens follow from the stem's real grid).
    input_shape: tuple[int, int, int] | None = None  # (D, H, W)
    num_classes: int | None = None  # N
    in_channels: int = 1
    # Stem: one Conv3D per stage, 'same' padding, ReLU. The seed's projection_dim x 8, 4, 2, 1.
    stem_filters: tuple[int, ...] = (2048, 1024, 512, 256)
    stem_kernels: tuple[int, ...] = (10, 1, 1, 1)  # `reference`: stage 1 patchifies, 2-4 are pointwise
    stem_strides: tuple[int, ...] = (10, 1, 1, 1)
    num_blocks: int = 18
    num_heads: int = 4
    key_dim: int = 256  # per head, as Keras' MultiHeadAttention(key_dim=projection_dim) in the seed
    mlp_units: tuple[int, ...] = (512, 256)  # GELU, dropout after each; the last equals projection_dim
    mlp_dropout: float = 0.15
    attention_dropout: float = 0.1
    layer_norm_epsilon: float = 1e-6
    taps: tuple[int, ...] = (3, 6, 9, 12, 15, 18)  # 1-based block outputs concatenated by the decoder
    pooling: str = "mean"  # token pooling before the head: "mean", "flatten" or "token" (a class token)
    head_units: int = 128
    # Decoder BatchNorm momentum. Keras' default 0.99 lets the running statistics lag for the few
    # hundred steps of a small-data run (huge early val loss); 0.9 is PyTorch's equivalent default.
    batchnorm_momentum: float = 0.9
    # The small-data recipe (tf_transformer/recipe_layers.py; all off in `reference` / `reference_literal`):
    layer_scale: float = 0.0  # LayerScale initial gain on each residual branch (CaiT: 0.1 for <= 18 blocks); 0: off
    drop_path: float = 0.0  # stochastic depth of the last block, linear from 0 at the first (DeiT: 0.1)
    stem_norm: bool = False  # Conv3D -> BatchNorm -> ReLU in the stem (the convolutional stem of Xiao et al. 2021)

    def __post_init__(self):
        for name in ("stem_filters", "stem_kernels", "stem_strides", "mlp_units", "taps"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "input_shape", check_data_binding(self.input_shape, self.num_classes))
        stages = {len(self.stem_filters), len(self.stem_kernels), len(self.stem_strides)}
        if len(stages) != 1 or 0 in stages:
            raise ConfigError(f"stem_filters/kernels/strides must have the same non-zero length, got "
                             f"{self.stem_filters}, {self.stem_kernels}, {self.stem_strides}")
        for name in ("stem_filters", "stem_kernels", "stem_strides", "mlp_units"):
            if min(getattr(self, name)) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: every value must be >= 1")
        if self.mlp_units[-1] != self.projection_dim:
            raise ConfigError(f"mlp_units {self.mlp_units}: the last must equal projection_dim {self.projection_dim} "
                             "(the residual add)")
        if self.num_blocks < 1 or self.num_heads < 1 or self.key_dim < 1:
            raise ConfigError(f"num_blocks {self.num_blocks}, num_heads {self.num_heads}, key_dim {self.key_dim}: "
                             "must be >= 1")
        if not self.taps or any(not 1 <= t <= self.num_blocks for t in self.taps) or len(set(self.taps)) != len(self.taps):
            raise ConfigError(f"taps {self.taps}: distinct 1-based block numbers in 1..{self.num_blocks}")
        if self.pooling not in ("mean", "flatten", "token"):
            raise ConfigError(f"pooling '{self.pooling}' is not 'mean', 'flatten' or 'token'")
        if self.layer_scale < 0:
            raise ConfigError(f"layer_scale {self.layer_scale}: must be >= 0 (0: off)")
        for name in ("mlp_dropout", "attention_dropout", "drop_path"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: must be in [0, 1)")

    @property
    def projection_dim(self) -> int:
        return self.stem_filters[-1]

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """The stem's output grid: 'same' padding gives ceil(size / stride) per stage and axis."""
        grid = require_data(self)
        for stride in self.stem_strides:
            grid = tuple(math.ceil(n / stride) for n in grid)
        return grid

    @property
    def num_tokens(self) -> int:
        d, h, w = self.token_grid
        return d * h * w

    def to_dict(self) -> dict:
        return asdict(self)

    def with_data(self, *, input_shape, num_classes: int) -> TransformerConfig:
        """This architecture bound to the data's volume shape and class count (what a network is built from)."""
        return replace(self, input_shape=tuple(input_shape), num_classes=num_classes)


PRESETS: dict[str, TransformerConfig] = {
    # docs/design.md section 2, decision 1: stage 1 patchifies 10^3 patches, stages 2-4 project each token 2048->1024->512->256.
    "reference": TransformerConfig(),
    # The seed's text verbatim: kernel = stride = 10 in all four stages, flatten pooling (a large GPU's job).
    "reference_literal": TransformerConfig(stem_kernels=(10, 10, 10, 10), stem_strides=(10, 10, 10, 10), pooling="flatten"),
    # CPU-sized: 8^3 patches of a 32^3 volume = 64 tokens of 64 features, 6 blocks.
    "small": TransformerConfig(stem_filters=(128, 64), stem_kernels=(8, 1),
                               stem_strides=(8, 1), num_blocks=6, num_heads=4, key_dim=16, mlp_units=(128, 64),
                               taps=(2, 4, 6), head_units=64),
    # The CPU preset of the small-data recipe (issue 11): a convolutional stem in the seed's form — its
    # stages as 3^3 convolutions, BatchNorm and ReLU, stride 2 thrice (32^3 -> 4^3 = 64 tokens), then the
    # seed's pointwise projection — LayerScale, stochastic depth, `small`'s encoder and decoder.
    "small_recipe": TransformerConfig(stem_filters=(16, 32, 64, 64),
                                      stem_kernels=(3, 3, 3, 1), stem_strides=(2, 2, 2, 1), stem_norm=True,
                                      num_blocks=6, num_heads=4, key_dim=16, mlp_units=(128, 64), taps=(2, 4, 6),
                                      head_units=64, layer_scale=0.1, drop_path=0.1),
    # The recipe for 64^3 on a CPU (issue 25): one more stride-2 stage in the stem (64^3 -> 4^3 = 64 tokens), so
    # the encoder costs what `small_recipe` costs at 32^3; the ResNet's counterpart is small_recipe_strided.
    "small_recipe_strided": TransformerConfig(stem_filters=(16, 32, 64, 64, 64),
                                              stem_kernels=(3, 3, 3, 3, 1), stem_strides=(2, 2, 2, 2, 1),
                                              stem_norm=True, num_blocks=6, num_heads=4, key_dim=16,
                                              mlp_units=(128, 64), taps=(2, 4, 6), head_units=64, layer_scale=0.1,
                                              drop_path=0.1),
    # Unit tests: 4^3 patches of 16^3 = 64 tokens of 16 features, 3 blocks.
    "tiny": TransformerConfig(stem_filters=(32, 16), stem_kernels=(4, 1), stem_strides=(4, 1),
                              num_blocks=3, num_heads=2, key_dim=8, mlp_units=(32, 16), taps=(1, 2, 3), head_units=16),
}


def preset(name: str, **overrides) -> TransformerConfig:
    name = canonical_preset(name)
    if name not in PRESETS:
        raise ConfigError(f"preset '{name}' is not one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
