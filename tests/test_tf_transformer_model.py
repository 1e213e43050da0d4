import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from tf_transformer.config import PRESETS, TransformerConfig, preset
from tf_transformer.model import build_transformer, summary_lines

ROOT = Path(__file__).resolve().parents[1]
SEED_TAPS = (3, 6, 9, 12, 15, 18)


@pytest.fixture(scope="module")
def seed_model():
    # the seed preset at a reduced 40^3 input: 4^3 = 64 tokens, builds in seconds
    return build_transformer(PRESETS["reference"].with_data(input_shape=(40, 40, 40), num_classes=3))


def test_seed_preset_layers_match_the_seed(seed_model):
    model = seed_model
    stems = [model.get_layer(f"stem{i}") for i in range(1, 5)]
    assert [s.filters for s in stems] == [2048, 1024, 512, 256]
    assert [s.kernel_size for s in stems] == [(10, 10, 10), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert [s.strides for s in stems] == [(10, 10, 10), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert all(s.padding == "same" and s.activation.__name__ == "relu" for s in stems)
    blocks = sorted({layer.name.split("_")[0] for layer in model.layers if layer.name.startswith("block")},
                    key=lambda n: int(n[5:]))
    assert blocks == [f"block{i}" for i in range(1, 19)]
    for i in range(1, 19):
        mha = model.get_layer(f"block{i}_mha")
        assert (mha.num_heads, mha.key_dim, mha.dropout) == (4, 256, 0.1)
        mlp = [model.get_layer(f"block{i}_mlp{j}") for j in (1, 2)]
        assert [d.units for d in mlp] == [512, 256] and all(d.activation.__name__ == "gelu" for d in mlp)
        assert [model.get_layer(f"block{i}_drop{j}").rate for j in (1, 2)] == [0.15, 0.15]
        assert model.get_layer(f"block{i}_ln1").epsilon == 1e-6
    assert isinstance(model.get_layer("decoder_bn"), keras.layers.BatchNormalization)
    head = model.get_layer("head")
    assert head.units == 128 and head.activation.__name__ == "relu"
    logits = model.get_layer("logits")
    assert logits.units == 3 and logits.activation.__name__ == "linear"
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalAveragePooling1D)


def test_decoder_taps_are_blocks_3_6_9_12_15_18(seed_model):
    concat = seed_model.get_layer("taps")
    producers = [t._keras_history.operation.name for t in concat.input]
    assert producers == [f"block{k}_add2" for k in SEED_TAPS]  # the output after the k-th block, 1-based
    assert concat.output.shape[-1] == 256 * 6


def test_token_count_comes_from_the_real_grid():
    config = PRESETS["reference"].with_data(input_shape=(192,) * 3, num_classes=2)
    assert config.num_tokens == 8000 and config.with_data(input_shape=(64,) * 3, num_classes=2).num_tokens == 343
    assert config.with_data(input_shape=(50, 60, 41), num_classes=2).token_grid == (5, 6, 5)


def test_seed_literal_differs_only_in_stem_geometry_and_pooling():
    seed, literal = PRESETS["reference"].to_dict(), PRESETS["reference_literal"].to_dict()
    differing = {k for k in seed if seed[k] != literal[k]}
    assert differing == {"stem_kernels", "stem_strides", "pooling"}
    assert literal["stem_kernels"] == literal["stem_strides"] == (10, 10, 10, 10) and literal["pooling"] == "flatten"
    assert at_192(PRESETS["reference_literal"]).num_tokens == 1  # 192 -> 20 -> 2 -> 1 -> 1


def at_192(config):
    return config.with_data(input_shape=(192,) * 3, num_classes=2)


def test_presets_name_an_architecture_only():
    assert all(c.input_shape is None and c.num_classes is None for c in PRESETS.values())
    with pytest.raises(ValueError, match="a preset names an architecture only"):
        build_transformer(PRESETS["tiny"])


def test_summary_warns_below_two_tokens():
    assert any("WARNING" in line for line in summary_lines(at_192(PRESETS["reference_literal"])))
    assert not any("WARNING" in line for line in summary_lines(at_192(PRESETS["reference"])))
    one_token = preset("tiny").with_data(input_shape=(4, 4, 4), num_classes=2)
    with pytest.warns(UserWarning, match="1 token"):
        build_transformer(one_token)


# The volume size each CPU preset is made for (a preset names no shape; --shape gives it).
CPU_PRESET_SIZES = {"tiny": 16, "small": 32, "small_recipe": 32, "small_recipe_strided": 64}


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"reference", "reference_literal"}))
def test_tiny_presets_give_finite_logits(name):
    config = PRESETS[name].with_data(input_shape=(CPU_PRESET_SIZES[name],) * 3, num_classes=3)
    model = build_transformer(config)
    logits = model(np.random.default_rng(0).normal(size=(2, *config.input_shape, 1)).astype("float32"))
    assert logits.shape == (2, config.num_classes) and np.isfinite(keras.ops.convert_to_numpy(logits)).all()


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    config = PRESETS["tiny"].with_data(input_shape=(16,) * 3, num_classes=2)
    model = build_transformer(config)
    x = np.random.default_rng(0).normal(size=(2, *config.input_shape, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(input_shape=(16,) * 3, num_classes=1), "num_classes 1"),
        (dict(num_classes=3), "bind both"),
        (dict(taps=(0, 3)), r"taps \(0, 3\)"),
        (dict(taps=(19,)), r"taps \(19,\)"),
        (dict(pooling="max"), "pooling 'max'"),
        (dict(mlp_units=(512, 128)), r"mlp_units \(512, 128\)"),
        (dict(stem_kernels=(10, 1)), "same non-zero length"),
        (dict(mlp_dropout=1.5), "mlp_dropout 1.5"),
    ],
)
def test_invalid_configs_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig(**kwargs)


STEP_SCRIPT = """
import numpy as np, keras
from tf_transformer.config import PRESETS
from tf_transformer.model import build_transformer
keras.utils.set_random_seed(0)
config = PRESETS["tiny"].with_data(input_shape=(16,) * 3, num_classes=2)
model = build_transformer(config)
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x = np.random.default_rng(0).normal(size=(4, *config.input_shape, 1)).astype("float32")
before = [np.array(w) for w in model.get_weights()]
loss = model.train_on_batch(x, np.array([0, 1, 0, 1]))
changed = sum(not np.array_equal(a, np.array(b)) for a, b in zip(before, model.get_weights()))
assert np.isfinite(loss) and changed > 0, (loss, changed)
print(keras.backend.backend(), "ok")
"""


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_one_training_step_under_each_backend(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", STEP_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{backend} ok" in result.stdout


def test_config_is_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["reference"].num_blocks = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        TransformerConfig((64, 64, 64))  # type: ignore[misc]
