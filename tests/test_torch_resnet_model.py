import pytest
import torch
from torch import nn

from torch_resnet.config import PRESETS, ResNetConfig, preset
from torch_resnet.model import ResBlock, build_resnet


def test_seed_preset_flatten_size_is_55296_on_meta():
    config = PRESETS["seed"].with_data(input_shape=(192, 192, 192), num_classes=3)
    assert config.flatten_features == 55296
    with torch.device("meta"):
        model = build_resnet(config)
        logits = model(torch.empty(2, 1, 192, 192, 192))
    assert model.head[1].in_features == 55296 and logits.shape == (2, 3)
    assert PRESETS["seed"].filters == 32 and PRESETS["seed"].input_shape == (192, 192, 192)


def test_193_cube_also_gives_55296():
    assert PRESETS["seed"].with_data(input_shape=(193,) * 3, num_classes=2).flatten_features == 55296


def _conv_signature(conv: nn.Conv3d):
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)


def test_layer_sequence_matches_the_seed():
    model = build_resnet(PRESETS["seed"])
    stem = list(model.stem)
    assert [type(m) for m in stem] == [nn.Conv3d, nn.MaxPool3d, nn.BatchNorm3d, nn.ReLU]
    assert _conv_signature(stem[0]) == (1, 32, (3, 3, 3), (1, 1, 1), (1, 1, 1))
    assert (stem[1].kernel_size, stem[1].stride, stem[1].padding) == (2, 1, 1)
    assert list(model.stages) == [f"layer{n}" for n in range(2, 12)]
    for n, stage in enumerate(model.stages.values(), start=2):
        first, second = stage
        downsample = n in (4, 7, 10)
        assert isinstance(first, ResBlock) and isinstance(second, ResBlock) and len(stage) == 2
        assert isinstance(second.shortcut, nn.Identity)
        for block, is_down in ((first, downsample), (second, False)):
            stride = (2, 2, 2) if is_down else (1, 1, 1)
            assert _conv_signature(block.conv1) == (32, 32, (3, 3, 3), stride, (1, 1, 1))
            assert _conv_signature(block.conv2) == (32, 32, (3, 3, 3), (1, 1, 1), (1, 1, 1))
            if is_down:
                conv, bn = block.shortcut
                assert _conv_signature(conv) == (32, 32, (1, 1, 1), (2, 2, 2), (0, 0, 0))
                assert isinstance(bn, nn.BatchNorm3d)
            else:
                assert isinstance(block.shortcut, nn.Identity)
    assert isinstance(model.pool, nn.AvgPool3d) and model.pool.kernel_size == 2
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(55296, 256), (256, 256), (256, 2)]
    assert [type(m) for m in model.head] == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


def test_block_applies_relu_before_the_addition():
    torch.manual_seed(0)
    block = ResBlock(2, 2, downsample=False).eval()
    x = torch.randn(1, 2, 4, 4, 4)
    before_relu = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    assert (before_relu < 0).any()  # otherwise the two readings below would agree
    assert torch.allclose(block(x), torch.relu(torch.relu(before_relu) + x))  # the seed's ReLU, then the add
    assert not torch.allclose(block(x), torch.relu(before_relu + x))  # torchvision's order would differ


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_logits_and_gradients(name):
    torch.manual_seed(0)
    config = preset(name).with_data(input_shape=PRESETS[name].input_shape, num_classes=3)
    model = build_resnet(config)
    x = torch.randn(2, 1, *config.input_shape)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = PRESETS["tiny"]
    plain = build_resnet(config)
    ckpt = build_resnet(config, activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, *config.input_shape)
    plain(x).sum().backward()
    ckpt(x).sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_shape=(4, 4, 4)), r"input_shape \(4, 4, 4\): too small"),
        (dict(num_classes=1), "num_classes 1"),
        (dict(downsample_layers=(1,)), "downsample_layers"),
        (dict(filters=0), "filters 0"),
    ],
)
def test_invalid_configs_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNetConfig(**kwargs)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        ResNetConfig((32, 32, 32))  # type: ignore[misc]


def test_mean_pooling_shares_the_head_over_positions_and_the_seed_keeps_flatten():
    """pooling="mean" (global average pooling, not the seed's): F = filters, and the logits do not change
    when the feature grid is permuted, whereas the seed's flatten head gives every position its own weights."""
    assert PRESETS["seed"].pooling == "flatten"
    torch.manual_seed(0)
    seed_form = ResNetConfig(input_shape=(32, 32, 32), filters=4, hidden_units=8)  # a 2^3 grid after pooling
    config = ResNetConfig(input_shape=(32, 32, 32), filters=4, hidden_units=8, pooling="mean")
    assert config.flatten_features == 4 and seed_form.flatten_features == 4 * 8
    model = build_resnet(config).eval()
    assert isinstance(model.pool, nn.AdaptiveAvgPool3d)
    grid = torch.randn(2, config.filters, *[n + 1 for n in config.pooled_shape])
    flipped = torch.flip(grid, dims=(2, 3, 4))
    assert torch.allclose(model.head(model.pool(grid)), model.head(model.pool(flipped)), atol=1e-6)
    seed_like = build_resnet(seed_form).eval()
    grid = torch.randn(2, config.filters, *[2 * n for n in seed_like.config.pooled_shape])
    assert not torch.allclose(seed_like.head(seed_like.pool(grid)),
                              seed_like.head(seed_like.pool(torch.flip(grid, dims=(2, 3, 4)))), atol=1e-4)
    with pytest.raises(Exception, match="pooling 'max'"):
        preset("tiny", pooling="max")
