"""The small-data training recipe (issue 11): its layers, presets, weight-decay exclusions, rotation and
scaling augmentation, and per-field model overrides from the command line."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import ConfigError, DataError

# ---- layers -------------------------------------------------------------------------------------------

def test_layer_scale_starts_at_its_initial_gain():
    from tf_transformer.recipe_layers import LayerScale

    x = np.ones((2, 5, 4), dtype="float32")
    assert np.allclose(LayerScale(0.1)(x), 0.1)


def test_drop_path_drops_whole_samples_in_training_only():
    import keras

    from tf_transformer.recipe_layers import DropPath

    layer = DropPath(0.5, seed=3)
    x = np.ones((256, 4, 3), dtype="float32")
    assert np.array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = out.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}  # a sample is dropped or kept whole, kept ones scaled by 1/0.5
    assert all(len(np.unique(row)) == 1 for row in per_sample)
    assert 0.3 < (per_sample[:, 0] == 0).mean() < 0.7  # about half dropped; expectation preserved


def test_stochastic_depth_grows_linearly_over_blocks():
    from tf_transformer.config import preset
    from tf_transformer.model import drop_path_rate

    config = preset("small_recipe")
    rates = [drop_path_rate(config, i) for i in range(1, config.num_blocks + 1)]
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)


def test_recipe_preset_has_a_convolutional_stem_and_the_seed_stays_the_seed():
    from tf_transformer.config import PRESETS
    from tf_transformer.model import build_transformer

    recipe = PRESETS["small_recipe"].with_data(input_shape=(32, 32, 32), num_classes=3)
    assert recipe.token_grid == (4, 4, 4) and recipe.stem_strides[:3] == (2, 2, 2) and recipe.stem_norm
    model = build_transformer(recipe)
    names = [layer.name for layer in model.layers]
    assert "stem1_bn" in names and "block6_mlp_scale" in names and "block6_mlp_droppath" in names
    assert "block1_mlp_droppath" not in names  # rate 0 at the first block: no layer
    for name in ("reference", "reference_literal", "small", "tiny"):
        assert (PRESETS[name].layer_scale, PRESETS[name].drop_path, PRESETS[name].stem_norm) == (0.0, 0.0, False)


def test_class_token_model_reads_the_token_and_round_trips(tmp_path):
    import keras

    from tf_transformer.config import preset
    from tf_transformer.model import build_transformer

    config = preset("tiny", pooling="token", layer_scale=0.1, drop_path=0.2,
                    stem_norm=True).with_data(input_shape=(16, 16, 16), num_classes=3)
    model = build_transformer(config)
    assert model.get_layer("position_embedding").table.shape == (config.num_tokens + 1, config.projection_dim)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    assert np.allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="pooling"):
        preset("tiny", pooling="max")


# ---- weight decay exclusions ------------------------------------------------------------------------------

def test_torch_weight_decay_skips_biases_and_norms():
    import torch

    from common.runs.config import TrainConfig
    from torch_resnet.config import preset
    from torch_resnet.model import build_resnet
    from torch_resnet.train import decay_groups, make_optimizer

    net = build_resnet(preset("tiny").with_data(input_shape=(16, 16, 16), num_classes=2))
    training = TrainConfig(weight_decay=0.5, lr=0.1, weight_decay_exclusions=True)
    optimizer = make_optimizer(decay_groups(net, training), training)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)  # only weight decay moves anything
    optimizer.step()
    for name, p in net.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == (p.ndim > 1), name
    assert len(decay_groups(net, TrainConfig())) == len(list(net.parameters()))  # off: one group, all decayed


def test_keras_weight_decay_skips_biases_norms_and_token_tables():
    import keras

    from common.runs.config import TrainConfig
    from tf_transformer.config import preset
    from tf_transformer.model import build_transformer
    from tf_transformer.train import make_optimizer, no_decay_variables

    model = build_transformer(preset("tiny", layer_scale=0.1).with_data(input_shape=(16, 16, 16), num_classes=2))
    excluded = {v.path for v in no_decay_variables(model)}
    assert "position_embedding/table" in excluded and "block1_ln1/gamma" in excluded
    assert "block1_attention_scale/gamma" in excluded and "stem1/bias" in excluded
    assert "block1_mha/query/bias" in excluded  # (heads, key_dim): a bias all the same
    assert "stem1/kernel" not in excluded and "head/kernel" not in excluded
    optimizer = make_optimizer(TrainConfig(weight_decay=0.5, lr=0.1, weight_decay_exclusions=True), model)
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    for v in model.trainable_variables:
        moved = not np.array_equal(keras.ops.convert_to_numpy(v), before[v.path])
        assert moved == (v.path not in excluded), v.path


# ---- augmentation -----------------------------------------------------------------------------------------

def test_rotation_and_scaling_are_the_identity_at_zero_and_rotate_about_the_centre():
    from common.data.augment import rotate_and_scale, rotation_matrix

    rng = np.random.default_rng(0)
    volume = rng.normal(size=(9, 9, 9)).astype(np.float32)
    assert np.allclose(rotate_and_scale(volume, (0, 0, 0), 1.0), volume, atol=1e-5)
    quarter = rotate_and_scale(volume, (np.pi / 2, 0, 0), 1.0)  # about axis 0: a quarter turn of axes 1 and 2
    assert any(np.allclose(quarter, np.rot90(volume, k, axes=(1, 2)), atol=1e-4) for k in (1, 3))
    assert np.allclose(rotation_matrix((0.3, -0.2, 0.1)) @ rotation_matrix((0.3, -0.2, 0.1)).T, np.eye(3))
    blob = np.zeros((21, 21, 21), dtype=np.float32)
    blob[8:13, 8:13, 8:13] = 1
    grown = rotate_and_scale(blob, (0, 0, 0), 1.5)
    assert (grown > 0.5).sum() > 2 * (blob > 0.5).sum()  # zoom 1.5: about 3.4x the volume, centred
    assert grown[10, 10, 10] == pytest.approx(1.0)


def test_augmentation_with_rotation_is_seeded_and_checked():
    from common.data.augment import AugmentConfig, augment_volume
    from common.runs.config import TrainConfig

    config = TrainConfig(rotate_degrees=10, scale_jitter=0.1).augmentation()
    assert (config.max_rotation_degrees, config.max_scale) == (10, 0.1)
    volume = np.random.default_rng(1).normal(size=(12, 12, 12)).astype(np.float32)
    a = augment_volume(volume, config, np.random.default_rng(5))
    b = augment_volume(volume, config, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == volume.shape and a.dtype == np.float32
    assert not np.allclose(a, augment_volume(volume, AugmentConfig(), np.random.default_rng(5)))
    with pytest.raises(DataError, match="rotation"):
        TrainConfig(rotate_degrees=90)
    with pytest.raises(DataError, match=">= 0"):
        AugmentConfig(max_scale=-0.1)


# ---- --model KEY=VALUE -------------------------------------------------------------------------------------

def test_model_overrides_are_typed_by_the_config_fields():
    from common.runs.typed import parse_overrides
    from tf_transformer.config import TransformerConfig, preset

    overrides = parse_overrides(TransformerConfig, ["layer_scale=0", "drop-path=0.2", "pooling=token",
                                                    "stem_kernels=[8, 1]", "stem_norm=true"])
    assert overrides == {"layer_scale": 0, "drop_path": 0.2, "pooling": "token", "stem_kernels": (8, 1),
                         "stem_norm": True}
    assert preset("small_recipe", **parse_overrides(TransformerConfig, ["layer_scale=0"])).layer_scale == 0
    with pytest.raises(ConfigError, match="'layer_scal' is not a field of TransformerConfig"):
        parse_overrides(TransformerConfig, ["layer_scal=0.1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_overrides(TransformerConfig, ["layer_scale"])


def test_a_bad_model_override_stops_the_cli_before_any_work(tmp_path, capsys):
    from torch_resnet.cli import main

    code = main(["train", "--model", "filters=0", "--preset", "tiny", "--shape", "16", "16", "16",
                 "--runs-root", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert code != 0
    assert "filters 0: must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


# ---- weight EMA -------------------------------------------------------------------------------------------

def _tiny_dataset(make_manifest, cache_root):
    from common.data.dataset import prepare_dataset
    from common.data.preprocess import PreprocessConfig

    return prepare_dataset(make_manifest(n_subjects=10), label_column="label",
                           preprocess=PreprocessConfig(shape=(16, 16, 16)), cache_root=cache_root, progress=False)


def test_torch_ema_is_what_validation_and_the_saved_model_see(make_manifest, cache_root, tmp_path):
    import torch

    from common.data.batches import EpochBatches
    from common.runs.config import TrainConfig
    from common.runs.record import PrecisionDecision
    from torch_resnet.config import preset
    from torch_resnet.distributed import DistContext
    from torch_resnet.options import TorchOptions
    from torch_resnet.train import TorchAdapter

    dataset = _tiny_dataset(make_manifest, cache_root)
    config = preset("tiny").with_data(input_shape=(16, 16, 16), num_classes=2)

    def adapter(ema_decay):
        return TorchAdapter(config, TrainConfig(batch_size=2, ema_decay=ema_decay), TorchOptions(channels_last=False),
                            PrecisionDecision("fp32", "fp32", "test"), DistContext(), dataset.classes, dataset)

    plain, averaged = adapter(0.0), adapter(0.9)
    batches = EpochBatches(dataset.split("train"), batch_size=2, seed=0, epoch=0)
    for a in (plain, averaged):
        a.fit_epoch(batches, learning_rate=1e-2, on_step=lambda loss: None)
    steps = len(batches)
    assert plain.ema is None and averaged.ema.n_averaged.item() == steps  # one update per step
    live = dict(averaged.net.named_parameters())
    assert any(not torch.equal(p, live[n]) for n, p in averaged.ema.module.named_parameters())
    x = dataset.split("val").x
    ema_probs = averaged.predict(x)
    averaged.save_model(tmp_path / "model.pt")
    fresh = adapter(0.9)
    fresh.load_model(tmp_path / "model.pt")
    assert np.allclose(fresh.predict(x), ema_probs, atol=1e-6)  # the saved model is the average
    averaged.save_state(tmp_path / "state.pt")
    resumed = adapter(0.9)
    resumed.load_state(tmp_path / "state.pt")
    assert resumed.ema.n_averaged.item() == steps and np.allclose(resumed.predict(x), ema_probs, atol=1e-6)


def test_keras_ema_is_swapped_in_for_validation_only(make_manifest, cache_root, tmp_path):
    import keras

    from common.data.batches import EpochBatches
    from common.runs.config import TrainConfig
    from common.runs.record import PrecisionDecision
    from tf_transformer.config import preset
    from tf_transformer.options import KerasOptions
    from tf_transformer.train import KerasAdapter

    dataset = _tiny_dataset(make_manifest, cache_root)
    config = preset("tiny").with_data(input_shape=(16, 16, 16), num_classes=2)
    adapter = KerasAdapter(config, TrainConfig(batch_size=2, ema_decay=0.9), KerasOptions(),
                           PrecisionDecision("fp32", "fp32", "test"))
    adapter.fit_epoch(EpochBatches(dataset.split("train"), batch_size=2, seed=0, epoch=0), learning_rate=1e-2,
                      on_step=lambda loss: None)
    live = [keras.ops.convert_to_numpy(v).copy() for v in adapter.model.trainable_variables]
    x = dataset.split("val").x
    ema_probs = adapter.predict(x)
    after = [keras.ops.convert_to_numpy(v) for v in adapter.model.trainable_variables]
    assert all(np.array_equal(a, b) for a, b in zip(live, after))  # swapped back after validation
    from tf_transformer.train import predict_probabilities
    assert not np.allclose(predict_probabilities(adapter.model, x, batch_size=2), ema_probs)  # live != average
    adapter.save_model(tmp_path / "model.keras")
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(live, adapter.model.trainable_variables))
    adapter.load_model(tmp_path / "model.keras")
    assert np.allclose(adapter.predict(x), ema_probs, atol=1e-5)  # the saved model is the average


# ---- summary.json groups by configuration ---------------------------------------------------------------

def test_summary_keeps_configurations_of_one_model_apart():
    from common.evaluation.summary import _label

    entries = [{"package": "tf_transformer", "preset": "small", "configuration_id": "a"},
               {"package": "tf_transformer", "preset": "small_recipe", "configuration_id": "b"},
               {"package": "tf_transformer", "preset": "small_recipe", "configuration_id": "c"},
               {"package": "torch_resnet", "preset": "small", "configuration_id": "d"}]
    assert [_label(e, entries) for e in entries] == [
        "Transformer small", "Transformer small_recipe b", "Transformer small_recipe c", "ResNet"]
    # Runs named after their configuration: the shared name without the seed suffix tells them apart.
    def runs(name):
        return [{"seed": seed, "run_dir": f"runs/{name}-s{seed}"} for seed in (0, 1, 2)]

    entries[1]["runs"], entries[2]["runs"] = runs("vit-recipe"), runs("vit-recipe-lr1e-3")
    assert [_label(e, entries) for e in entries[1:3]] == ["Transformer (vit-recipe)", "Transformer (vit-recipe-lr1e-3)"]
    entries[2]["runs"] = [{"seed": 0, "run_dir": "runs/a-s0"}, {"seed": 1, "run_dir": "runs/b-s1"}]  # no shared name
    assert [_label(e, entries) for e in entries[1:3]] == ["Transformer small_recipe b", "Transformer small_recipe c"]
