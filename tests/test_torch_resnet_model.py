import pytest
import torch
from torch import nn

from torch_resnet.config import PRESETS, ResNetConfig, preset
from torch_resnet.model import ResBlock, build_resnet


def test_seed_preset_flatten_size_is_55296_on_meta():
    config = PRESETS["reference"].with_data(input_shape=(192, 192, 192), num_classes=3)
    assert config.flatten_features == 55296
    with torch.device("meta"):
        model = build_resnet(config)
        logits = model(torch.empty(2, 1, 192, 192, 192))
    assert model.head[1].in_features == 55296 and logits.shape == (2, 3)
    assert PRESETS["reference"].filters == 32
    assert PRESETS["reference"].input_shape is None and PRESETS["reference"].num_classes is None  # the data's facts
    with pytest.raises(ValueError, match="a preset names an architecture only"):
        build_resnet(PRESETS["reference"])


def test_193_cube_also_gives_55296():
    assert PRESETS["reference"].with_data(input_shape=(193,) * 3, num_classes=2).flatten_features == 55296


def _conv_signature(conv: nn.Conv3d):
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)


def test_layer_sequence_matches_the_seed():
    model = build_resnet(PRESETS["reference"].with_data(input_shape=(192,) * 3, num_classes=2))
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


@pytest.mark.parametrize("name,size", [("tiny", 16), ("small", 32)])
def test_logits_and_gradients(name, size):
    torch.manual_seed(0)
    config = preset(name).with_data(input_shape=(size,) * 3, num_classes=3)
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
    config = PRESETS["tiny"].with_data(input_shape=(16,) * 3, num_classes=2)
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
        (dict(input_shape=(4, 4, 4), num_classes=2), r"input_shape \(4, 4, 4\): too small"),
        (dict(input_shape=(16, 16, 16), num_classes=1), "num_classes 1"),
        (dict(input_shape=(16, 16, 16)), "bind both"),
        (dict(input_shape=(16, 16), num_classes=2), "expected three positive sizes"),
        (dict(downsample_layers=(1,)), "downsample_layers"),
        (dict(filters=0), "filters 0"),
        # ResNet-D shortcuts average 2^3 cells: a grid of 1 entering a Downsample block is refused by name,
        # not a RuntimeError from inside AvgPool3d (16^3 with a 4x stem: 4 -> 2 -> 1).
        (dict(input_shape=(16, 16, 16), num_classes=2, stem_strides=(2, 2), avg_down=True, pooling="mean"),
         r"too small for ResNet-D shortcuts \(avg_down\).*\(1, 1, 1\)\]; give a larger --shape"),
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
    assert PRESETS["reference"].pooling == "flatten"
    torch.manual_seed(0)
    seed_form = ResNetConfig(input_shape=(32, 32, 32), num_classes=2, filters=4, hidden_units=8)  # 2^3 after pooling
    config = ResNetConfig(input_shape=(32, 32, 32), num_classes=2, filters=4, hidden_units=8, pooling="mean")
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
    with pytest.raises(Exception, match="pooling 'median'"):
        preset("tiny", pooling="median")


def test_old_preset_names_still_work_with_a_notice(capsys):
    from dataclasses import replace

    from conftest import fake_record

    from common.runs.options import Parser, add_training_arguments

    assert preset("seed") == PRESETS["reference"]
    assert "preset 'seed' is now called 'reference'" in capsys.readouterr().err
    parser = Parser()
    add_training_arguments(parser, presets=PRESETS, default_preset="small")
    assert parser.parse_args(["--preset", "seed"]).preset == "reference"
    old_run = replace(fake_record(), preset="seed").identity()
    assert old_run.fields()["preset"] == "reference"  # a run recorded under the old name still resumes
    assert "seed" not in PRESETS and "seed_literal" not in PRESETS


# ---- the ResNet recipe (issue 25): every element a config field, all off in `reference` ----------
RECIPE_FIELDS = ("branch_relu", "zero_init_residual", "kaiming_init", "conv_bias", "stem_strides", "avg_down",
                 "drop_path")


def test_reference_keeps_every_recipe_element_off_and_the_recipe_presets_have_them_all():
    default = ResNetConfig()
    for name in ("reference", "small", "tiny"):
        assert all(getattr(PRESETS[name], f) == getattr(default, f) for f in RECIPE_FIELDS), name
    assert (default.branch_relu, default.zero_init_residual, default.kaiming_init, default.conv_bias,
            default.stem_strides, default.avg_down, default.drop_path) == (True, False, False, True, (), False, 0.0)
    for name in ("small_recipe", "small_recipe_strided", "reference_recipe"):
        config = PRESETS[name]
        assert not config.branch_relu and config.kaiming_init and not config.conv_bias
        assert not config.zero_init_residual  # measured to delay learning on the demo
    assert PRESETS["small_recipe"].stem_strides == () and PRESETS["small_recipe"].pooling == "flatten"
    assert PRESETS["small_recipe"].filters == PRESETS["small"].filters
    for name in ("small_recipe_strided", "reference_recipe"):
        config = PRESETS[name]
        assert config.stem_strides == (2, 2) and config.drop_path > 0 and config.pooling == "mean" and config.avg_down


def test_post_activation_block_lets_the_branch_subtract():
    torch.manual_seed(0)
    block = ResBlock(2, 2, downsample=False, branch_relu=False).eval()
    x = torch.randn(1, 2, 4, 4, 4)
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    assert (branch < 0).any()
    assert torch.allclose(block(x), torch.relu(branch + x))  # torchvision's order: no ReLU before the add


def recipe(**overrides) -> ResNetConfig:
    return preset("small_recipe_strided", **overrides).with_data(input_shape=(32, 32, 32), num_classes=2)


def test_zero_init_residual_makes_every_block_start_as_its_shortcut():
    torch.manual_seed(0)
    model = build_resnet(recipe(drop_path=0.0, zero_init_residual=True)).eval()
    x = torch.rand(1, 16, 8, 8, 8)  # non-negative, as after a ReLU
    identity_block = model.stages["layer2"][1]
    assert torch.equal(identity_block.bn2.weight, torch.zeros(16))
    assert torch.allclose(identity_block(x), x)  # ReLU(0 + x) = x
    down = model.stages["layer4"][0]
    assert torch.allclose(down(x), torch.relu(down.shortcut(x)))
    assert not torch.equal(build_resnet(recipe(zero_init_residual=False)).stages["layer2"][1].bn2.weight,
                           torch.zeros(16))


def test_kaiming_init_and_no_conv_bias():
    torch.manual_seed(0)
    model = build_resnet(recipe())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert convs and all(c.bias is None for c in convs)
    conv = model.stages["layer3"][0].conv1  # 16 -> 16 channels, 3^3: fan_out = 16 * 27
    assert conv.weight.std().item() == pytest.approx((2 / (16 * 27)) ** 0.5, rel=0.1)
    torch.manual_seed(0)
    default = build_resnet(recipe(kaiming_init=False, conv_bias=True)).stages["layer3"][0].conv1
    assert default.bias is not None and default.weight.std().item() < 0.7 * conv.weight.std().item()


@pytest.mark.parametrize("strides, grid", [((), (33, 33, 33)), ((2,), (16, 16, 16)), ((2, 2), (8, 8, 8)),
                                           ((2, 1), (16, 16, 16))])
def test_stem_strides_set_the_grid_of_the_stages(strides, grid):
    config = recipe(stem_strides=strides)
    assert config.stage_shape == grid
    model = build_resnet(config).eval()
    assert model.stem(torch.zeros(1, 1, 32, 32, 32)).shape[2:] == grid
    convs = [m for m in model.stem if isinstance(m, nn.Conv3d)]
    assert [c.stride[0] for c in convs] == (list(strides) or [1])


def test_strided_stem_makes_64_cube_cheaper_than_small_at_32():
    from torch_resnet.model import flops_per_sample

    small_32 = flops_per_sample(preset("small").with_data(input_shape=(32, 32, 32), num_classes=2))
    recipe_64 = flops_per_sample(preset("small_recipe_strided").with_data(input_shape=(64, 64, 64), num_classes=2))
    assert recipe_64 <= small_32


def test_avg_down_shortcut_reads_every_voxel_of_each_cell():
    block = ResBlock(1, 1, downsample=True, avg_down=True).eval()
    plain = ResBlock(1, 1, downsample=True).eval()
    x = torch.zeros(1, 1, 4, 4, 4)
    x[0, 0, 1, 1, 1] = 1.0  # a voxel the stride-2 1^3 convolution never reads
    assert block.shortcut(x)[0, 0, 0, 0, 0] != block.shortcut(torch.zeros_like(x))[0, 0, 0, 0, 0]
    assert plain.shortcut(x)[0, 0, 0, 0, 0] == plain.shortcut(torch.zeros_like(x))[0, 0, 0, 0, 0]
    assert block.shortcut(torch.zeros(1, 1, 5, 7, 9)).shape[2:] == (3, 4, 5)  # ceil(n / 2), as the main path


def test_the_smallest_grid_avg_down_accepts_builds_and_runs():
    """32^3 with the strided preset: 8 -> 4 -> 2 entering the Downsample blocks, the smallest it accepts."""
    config = preset("small_recipe_strided").with_data(input_shape=(32, 32, 32), num_classes=2)
    assert config.downsample_inputs == [(8, 8, 8), (4, 4, 4), (2, 2, 2)] and config.feature_shape == (1, 1, 1)
    assert build_resnet(config).eval()(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 2)


def test_drop_path_grows_over_blocks_drops_whole_samples_in_training_and_is_identity_in_eval():
    from torch_resnet.model import DropPath

    model = build_resnet(recipe(drop_path=0.2))
    rates = [b.drop_path.p if isinstance(b.drop_path, DropPath) else 0.0 for s in model.stages.values() for b in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)
    drop = DropPath(0.5).train()
    torch.manual_seed(0)
    out = drop(torch.ones(64, 2, 2, 2, 2))
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}  # whole samples dropped, the rest scaled by 1/(1-p)
    assert all(len(row.unique()) == 1 for row in per_sample)
    assert torch.equal(drop.eval()(torch.ones(3, 2)), torch.ones(3, 2))


@pytest.mark.parametrize("pooling, features", [("mean", 16), ("max", 16), ("mean_max", 32)])
def test_global_pooling_heads(pooling, features):
    config = recipe(pooling=pooling)
    assert config.flatten_features == features
    model = build_resnet(config).eval()
    assert model.head[1].in_features == features and model(torch.randn(2, 1, 32, 32, 32)).shape == (2, 2)


def test_an_old_checkpoint_config_without_the_recipe_fields_is_the_reference_network():
    from torch_resnet.checkpoints import model_config_of

    old = {k: v for k, v in PRESETS["small"].to_dict().items() if k not in RECIPE_FIELDS}
    assert model_config_of({"model_config": old}) == PRESETS["small"]
