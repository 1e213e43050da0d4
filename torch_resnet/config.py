"""ResNet configuration and the preset registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from common.errors import ConfigError

POOLINGS = ("flatten", "mean")


@dataclass(frozen=True, kw_only=True)
class ResNetConfig:
    input_shape: tuple[int, int, int] = (192, 192, 192)  # (D, H, W): F, the flatten size, follows from it
    in_channels: int = 1
    num_classes: int = 2  # N, from the data
    filters: int = 32  # every conv of the seed has 32 filters
    # Seed "layers" 2..11 are the ten stages of two blocks; these begin with a Downsample block.
    downsample_layers: tuple[int, ...] = (4, 7, 10)
    hidden_units: int = 256  # the seed's MLP: F -> 256 -> 256 -> N
    # "flatten": the seed's head, AvgPool3d(2) then Flatten, so the MLP has weights per position (F above).
    # "mean": global average pooling over the grid (torchvision's ResNets): F = filters and one set of
    # weights for every position. Not the default of any preset (README "Models": measured on the demo).
    pooling: str = "flatten"

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "downsample_layers", tuple(int(s) for s in self.downsample_layers))
        if len(self.input_shape) != 3:
            raise ConfigError(f"input_shape {self.input_shape}: expected (D, H, W)")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes {self.num_classes}: a classifier needs at least 2 classes")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling '{self.pooling}': must be one of {POOLINGS}")
        for name in ("in_channels", "filters", "hidden_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: must be >= 1")
        if any(not 2 <= layer <= 11 for layer in self.downsample_layers):
            raise ConfigError(f"downsample_layers {self.downsample_layers}: seed layers are numbered 2..11")
        pooled = self.pooled_shape
        if min(pooled) < 1:
            raise ConfigError(
                f"input_shape {self.input_shape}: too small for {len(self.downsample_layers)} downsamplings "
                f"and the final 2x average pool (feature grid would be {pooled})"
            )

    @property
    def pooled_shape(self) -> tuple[int, int, int]:
        """Spatial grid after AvgPool3d(2): stem +1 (MaxPool k2 s1 p1), then ceil(/2) per Downsample."""
        sizes = []
        for n in self.input_shape:
            n += 1
            for _ in self.downsample_layers:
                n = (n - 1) // 2 + 1
            sizes.append(n // 2)
        return tuple(sizes)

    @property
    def flatten_features(self) -> int:
        """F: 32 x 12^3 = 55296 for the seed's 192^3 input; the filter count with global mean pooling."""
        if self.pooling == "mean":
            return self.filters
        d, h, w = self.pooled_shape
        return self.filters * d * h * w

    def to_dict(self) -> dict:
        return asdict(self)

    def with_data(self, *, input_shape, num_classes: int) -> ResNetConfig:
        return replace(self, input_shape=tuple(input_shape), num_classes=num_classes)


PRESETS: dict[str, ResNetConfig] = {
    "seed": ResNetConfig(),  # exactly the seed: 32 filters, 192^3, N from the data
    "small": ResNetConfig(input_shape=(32, 32, 32), filters=8, hidden_units=64),  # CPU demo and real-data CPU runs
    "tiny": ResNetConfig(input_shape=(16, 16, 16), filters=4, hidden_units=16),  # unit tests
}


def preset(name: str, **overrides) -> ResNetConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset '{name}' is not one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
