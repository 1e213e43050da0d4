"""ResNet configuration and the preset registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from common.errors import ConfigError
from common.runs.presets import canonical_preset, check_data_binding, require_data

POOLINGS = ("flatten", "mean", "max", "mean_max")


@dataclass(frozen=True, kw_only=True)
class ResNetConfig:
    # The data's facts, not the architecture's: a preset leaves them unset and `with_data` binds them from
    # --shape and the dataset's classes before a network is built (F, the flatten size, follows from the shape).
    input_shape: tuple[int, int, int] | None = None  # (D, H, W)
    num_classes: int | None = None  # N
    in_channels: int = 1
    filters: int = 32  # every conv of the seed has 32 filters
    # Seed "layers" 2..11 are the ten stages of two blocks; these begin with a Downsample block.
    downsample_layers: tuple[int, ...] = (4, 7, 10)
    hidden_units: int = 256  # the seed's MLP: F -> 256 -> 256 -> N; 0: one Linear(F, N), torchvision's fc
    # "flatten": the seed's head, AvgPool3d(2) then Flatten, so the MLP has weights per position (F above).
    # "mean": global average pooling over the grid (torchvision's ResNets): F = filters and one set of
    # weights for every position. Not the default of any preset (README "Models": measured on the demo).
    # "max": global max pooling (a finding anywhere in the volume decides); "mean_max": both, concatenated
    # (F = 2 x filters), as fastai's concat pooling.
    pooling: str = "flatten"
    # The training recipe of the ResNet (issue 25; every element off in `reference`, which
    # stays the seed's network, and each switchable with --model KEY=VALUE for the ablation):
    # branch_relu: the reference block's ReLU on the residual branch before the add. False: torchvision's
    # post-activation block, relu(bn2(conv2(.)) + shortcut), so the branch can also subtract.
    branch_relu: bool = True
    # zero_init_residual: the last BatchNorm's gamma of each residual branch starts at 0, so every block
    # starts as its shortcut (Goyal et al. 2017; torchvision's zero_init_residual).
    zero_init_residual: bool = False
    # kaiming_init: Kaiming-normal (fan_out, ReLU) convolution weights as torchvision initialises them;
    # False: PyTorch's default (Kaiming-uniform, a=sqrt(5)).
    kaiming_init: bool = False
    # conv_bias: a bias in every convolution, as the reference has; it is redundant before a BatchNorm.
    conv_bias: bool = True
    # stem_strides: () is the reference stem, Conv3d(3, s1) -> MaxPool3d(2, s1, p1) -> BN -> ReLU at full
    # resolution; otherwise one 3^3 Conv -> BN -> ReLU per entry with that stride (e.g. (2, 2): 64^3 -> 16^3),
    # so the ten stages run on a grid 2^len(stem) smaller per axis.
    stem_strides: tuple[int, ...] = ()
    # avg_down: the Downsample shortcut averages each 2^3 cell before its 1^3 convolution (ResNet-D, He et al.
    # 2019, "Bag of tricks") instead of the reference's stride-2 1^3 convolution, which reads one voxel in 8.
    avg_down: bool = False
    # drop_path: stochastic depth of the residual branch, linear from 0 in the first block to this in the
    # last (Huang et al. 2016); 0: off.
    drop_path: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "downsample_layers", tuple(int(s) for s in self.downsample_layers))
        object.__setattr__(self, "stem_strides", tuple(int(s) for s in self.stem_strides))
        if any(s < 1 for s in self.stem_strides):
            raise ConfigError(f"stem_strides {self.stem_strides}: every stride must be >= 1")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"drop_path {self.drop_path}: must be in [0, 1)")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling '{self.pooling}': must be one of {POOLINGS}")
        for name in ("in_channels", "filters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: must be >= 1")
        if self.hidden_units < 0:
            raise ConfigError(f"hidden_units {self.hidden_units}: must be >= 0 (0: a linear classifier)")
        if any(not 2 <= layer <= 11 for layer in self.downsample_layers):
            raise ConfigError(f"downsample_layers {self.downsample_layers}: seed layers are numbered 2..11")
        object.__setattr__(self, "input_shape", check_data_binding(self.input_shape, self.num_classes))
        if self.input_shape is None:
            return
        pooled = self.pooled_shape
        if min(pooled) < 1:
            raise ConfigError(
                f"input_shape {self.input_shape}: too small for {len(self.downsample_layers)} downsamplings "
                f"and the final 2x average pool (feature grid would be {pooled})"
            )
        smallest = min(min(grid) for grid in self.downsample_inputs) if self.downsample_layers else 2
        if self.avg_down and smallest < 2:
            raise ConfigError(
                f"input_shape {self.input_shape}: too small for ResNet-D shortcuts (avg_down), which average 2^3 "
                f"cells: the grids entering the Downsample blocks are {self.downsample_inputs}; give a larger "
                "--shape or --model avg_down=false"
            )

    @property
    def stage_shape(self) -> tuple[int, int, int]:
        """Spatial grid entering layer 2: the reference stem adds 1 (MaxPool k2 s1 p1); a strided stem
        divides by each stride, rounding up (padding 1, kernel 3)."""
        shape = require_data(self)
        if not self.stem_strides:
            return tuple(n + 1 for n in shape)
        sizes = []
        for n in shape:
            for stride in self.stem_strides:
                n = (n - 1) // stride + 1
            sizes.append(n)
        return tuple(sizes)

    @property
    def downsample_inputs(self) -> list[tuple[int, int, int]]:
        """Spatial grid entering each Downsample block (each halves it, rounding up)."""
        grids, grid = [], self.stage_shape
        for _ in self.downsample_layers:
            grids.append(grid)
            grid = tuple((n - 1) // 2 + 1 for n in grid)
        return grids

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """Spatial grid after layer 11: ceil(/2) per Downsample block."""
        grids = self.downsample_inputs
        if not grids:
            return self.stage_shape
        return tuple((n - 1) // 2 + 1 for n in grids[-1])

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        """Spatial grid the head flattens: AvgPool3d(2) of the features (floor), or one position for a global pool."""
        if self.pooling != "flatten":
            return (1, 1, 1)
        return tuple(n // 2 for n in self.feature_shape)

    @property
    def flatten_features(self) -> int:
        """F: 32 x 12^3 = 55296 for the seed's 192^3 input; the filter count with global mean pooling."""
        if self.pooling == "mean_max":
            return 2 * self.filters
        if self.pooling in ("mean", "max"):
            return self.filters
        d, h, w = self.pooled_shape
        return self.filters * d * h * w

    def to_dict(self) -> dict:
        return asdict(self)

    def with_data(self, *, input_shape, num_classes: int) -> ResNetConfig:
        """This architecture bound to the data's volume shape and class count (what a network is built from)."""
        return replace(self, input_shape=tuple(input_shape), num_classes=num_classes)


# The ResNet recipe's block (issue 25): torchvision's post-activation order, Kaiming-normal init, no conv bias
# before a BatchNorm. zero_init_residual stays off: on the demo it delayed learning, as did a strided stem at
# 32^3 (results/demo_robustness/ablation.md).
RECIPE_BLOCK = dict(branch_relu=False, kaiming_init=True, conv_bias=False)
# ... and for 64^3 and up: a 4x strided stem, ResNet-D shortcuts, global mean pooling and stochastic depth.
RECIPE_STRIDED = dict(RECIPE_BLOCK, stem_strides=(2, 2), avg_down=True, pooling="mean", drop_path=0.1)

PRESETS: dict[str, ResNetConfig] = {
    "reference": ResNetConfig(),  # exactly the seed: 32 filters (the seed trains it at 192^3)
    "small": ResNetConfig(filters=8, hidden_units=64),  # CPU demo and real-data CPU runs (32^3)
    # `small` with the recipe's block, at `small`'s cost: the CPU demo and 32^3 runs.
    "small_recipe": ResNetConfig(filters=8, hidden_units=64, **RECIPE_BLOCK),
    # The recipe for 64^3 on a CPU: a 4x strided stem runs the stages on a 16^3 grid, which pays for twice
    # `small`'s width and still costs half of `small` at 32^3 per sample (README "Models": measured).
    "small_recipe_strided": ResNetConfig(filters=16, hidden_units=64, **RECIPE_STRIDED),
    # The strided recipe at the reference's width, for GPUs at 192^3.
    "reference_recipe": ResNetConfig(filters=32, **RECIPE_STRIDED),
    "tiny": ResNetConfig(filters=4, hidden_units=16),  # unit tests (16^3)
}


def preset(name: str, **overrides) -> ResNetConfig:
    name = canonical_preset(name)
    if name not in PRESETS:
        raise ConfigError(f"preset '{name}' is not one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
