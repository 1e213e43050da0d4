"""The shared driver's parts: batches, schedules, precision, typed configs, FLOP counts, and the same
yardstick on both sides (identical batches, one end-to-end report)."""

import hashlib
import math
from dataclasses import fields

import numpy as np
import pytest
from conftest import fake_record

from common.data.augment import AugmentConfig
from common.data.batches import EpochBatches, balanced_class_weights
from common.data.dataset import SplitData
from common.errors import ConfigError
from common.runs.config import DataConfig, RuntimeConfig, TrainConfig
from common.runs.driver import is_better, validation_scores
from common.runs.options import Parser, add_data_arguments, add_training_arguments, configs_from_args
from common.runs.precision import CPU_BF16_MIN_SPEEDUP, Hardware, decide_precision
from common.runs.record import RunRecord, identity_differences, read_record, write_record
from common.runs.schedules import learning_rate
from common.runs.typed import from_jsonable, to_jsonable


def toy_split(n=10, shape=(6, 6, 6), seed=0):
    rng = np.random.default_rng(seed)
    return SplitData("train", rng.normal(size=(n, *shape)).astype(np.float16), np.arange(n) % 2,
                     [f"s{i}" for i in range(n)], [f"s{i}" for i in range(n)])


# ---- batches -----------------------------------------------------------------------------------
def test_an_epoch_is_a_pure_function_of_seed_epoch_and_step():
    split = toy_split()
    make = lambda seed, epoch: EpochBatches(split, batch_size=4, seed=seed, epoch=epoch,  # noqa: E731
                                            augment=AugmentConfig())
    a, b = make(0, 1), make(0, 1)
    assert [len(a[i].y) for i in range(len(a))] == [4, 4, 2]
    for i in range(len(a)):
        assert np.array_equal(a[i].x, b[i].x) and np.array_equal(a[i].indices, b[i].indices)
    assert np.array_equal(np.concatenate([a[i].indices for i in range(3)]), a.order)
    assert sorted(a.order) == list(range(10))  # a permutation: every sample once
    assert not np.array_equal(make(0, 2).order, a.order) and not np.array_equal(make(1, 1).order, a.order)
    assert not np.array_equal(a[1].x, split.x[a[1].indices].astype(np.float32))  # augmented


def test_ddp_ranks_split_each_global_batch():
    split = toy_split(n=10)
    single = EpochBatches(split, batch_size=4, seed=3, epoch=0, augment=AugmentConfig())
    ranks = [EpochBatches(split, batch_size=4, seed=3, epoch=0, augment=AugmentConfig(), rank=r, world_size=2)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    for step in range(2):  # full global batches: the ranks' rows are exactly the single process's batch
        rows = np.concatenate([ranks[r][step].indices for r in range(2)])
        assert sorted(rows) == sorted(single[step].indices)
        x = {int(i): v for r in range(2) for i, v in zip(ranks[r][step].indices, ranks[r][step].x)}
        for i, v in zip(single[step].indices, single[step].x):
            assert np.array_equal(x[int(i)], v)  # the same augmentation of the same sample
    with pytest.raises(ConfigError, match="multiple of the 3 processes"):
        EpochBatches(split, batch_size=4, seed=0, epoch=0, world_size=3)


def test_class_weights_are_one_formula_with_mean_one():
    y = np.array([0, 0, 0, 1])
    w = balanced_class_weights(y, 2)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    assert w[y].mean() == pytest.approx(1.0)
    batches = EpochBatches(SplitData("t", np.zeros((4, 2, 2, 2)), y, list("abcd"), list("abcd")), batch_size=4,
                           seed=0, epoch=0, class_weights=w)
    assert np.allclose(batches[0].weight, w[batches[0].y])


def constant_split(n=8, classes=2):
    """Volume i is constant i + 1 (so a blend reveals its partner and lam); labels i % classes."""
    x = np.broadcast_to(np.arange(1, n + 1, dtype=np.float32)[:, None, None, None], (n, 2, 2, 2)).copy()
    ids = [f"s{i}" for i in range(n)]
    return SplitData("train", x, np.arange(n) % classes, ids, ids)


def test_mixup_blends_each_volume_with_a_partner_of_its_global_batch():
    split = constant_split(n=8, classes=8)  # a class per sample: a target names the partner and lam
    plain = EpochBatches(split, batch_size=4, seed=1, epoch=0)[0]
    assert np.array_equal(plain.target, np.eye(8, dtype=np.float32)[plain.y])  # off: one-hot
    batches = EpochBatches(split, batch_size=4, seed=1, epoch=0, mixup=0.4)
    assert np.array_equal(batches.order, EpochBatches(split, batch_size=4, seed=1, epoch=0).order)
    lams = []
    for step in range(len(batches)):
        batch = batches[step]
        assert np.allclose(batch.target.sum(1), 1.0) and (batch.weight == 1).all()
        assert batch.x.dtype == batch.target.dtype == batch.weight.dtype == np.float32
        partners = []
        for x, own, target in zip(batch.x, batch.indices, batch.target):
            lam = target[own]
            assert lam >= 0.5 - 1e-6  # folded: the sample's own label dominates
            others = np.flatnonzero(target > 0)
            partner = own if len(others) == 1 else int(others[others != own][0])
            assert partner in batch.indices  # from the same batch
            assert np.allclose(x, lam * (own + 1) + (1 - lam) * (partner + 1), rtol=1e-6)
            partners.append(partner)
            lams.append(lam)
        assert sorted(partners) == sorted(batch.indices)  # a permutation of the batch
    assert 0.5 <= min(lams) < 0.99  # blends happen
    again = EpochBatches(split, batch_size=4, seed=1, epoch=0, mixup=0.4)
    assert all(np.array_equal(again[i].x, batches[i].x) and np.array_equal(again[i].target, batches[i].target)
               for i in range(len(batches)))  # pure in (seed, epoch, step)
    with pytest.raises(ConfigError, match="--mixup -1"):
        TrainConfig(mixup=-1)


def test_mixup_batches_do_not_depend_on_the_number_of_processes():
    split = constant_split(n=8)
    single = EpochBatches(split, batch_size=4, seed=5, epoch=2, augment=AugmentConfig(), mixup=0.4)
    ranks = [EpochBatches(split, batch_size=4, seed=5, epoch=2, augment=AugmentConfig(), mixup=0.4, rank=r,
                          world_size=2) for r in range(2)]
    for step in range(len(single)):
        x = np.empty_like(single[step].x)
        target = np.empty_like(single[step].target)
        for r in range(2):
            x[r::2], target[r::2] = ranks[r][step].x, ranks[r][step].target
        assert np.array_equal(x, single[step].x) and np.array_equal(target, single[step].target)


def test_mixup_with_class_weights_is_the_weighted_loss_of_each_component():
    """weight * CE(target, p) == lam * w_a * CE(a, p) + (1 - lam) * w_b * CE(b, p) for any prediction p."""
    split = constant_split(n=8, classes=3)
    split = SplitData("train", split.x, np.array([0, 0, 0, 0, 1, 1, 2, 2]), split.sample_ids, split.subject_ids)
    w = balanced_class_weights(split.y, 3)
    batch = EpochBatches(split, batch_size=8, seed=0, epoch=0, class_weights=w, mixup=1.0)[0]
    log_p = np.log(np.random.default_rng(0).dirichlet(np.ones(3), size=8))
    across_classes = 0
    for x, own, target, weight, lp in zip(batch.x, batch.indices, batch.target, batch.weight, log_p):
        for partner in range(8):  # find the partner and lam from the blended value, then compare the losses
            if split.y[partner] == split.y[own]:
                continue
            lam = (float(x.flat[0]) - (partner + 1)) / (own - partner)
            if not 0.5 - 1e-5 <= lam <= 1 + 1e-6:
                continue
            a, b = split.y[own], split.y[partner]
            expected = -(lam * w[a] * lp[a] + (1 - lam) * w[b] * lp[b])
            if np.isclose(-(weight * target * lp).sum(), expected, rtol=1e-5):
                across_classes += lam < 1 - 1e-6
                break
        else:
            assert np.isclose(target.max(), 1.0) and np.isclose(weight, w[split.y[own]])  # same-class blend
    assert across_classes >= 2


def test_both_adapters_receive_the_same_batches(make_manifest, cache_root, tmp_path, monkeypatch):
    """Train each model for two epochs and record every batch its adapter took from common."""
    from common.data import batches as batches_module
    from tf_transformer.cli import main as vit_main
    from torch_resnet.cli import main as resnet_main

    seen: list = []
    original = batches_module.EpochBatches.__getitem__

    def spy(self, step):
        batch = original(self, step)
        digest = hashlib.sha256(batch.x.tobytes() + batch.target.tobytes() + batch.weight.tobytes()).hexdigest()
        seen.append((self.epoch, step, digest))
        return batch

    monkeypatch.setattr(batches_module.EpochBatches, "__getitem__", spy)
    manifest = make_manifest(n_subjects=14)
    args = ["train", "--data", str(manifest), "--label-column", "label", "--shape", "16", "16", "16", "--preset",
            "tiny", "--batch-size", "4", "--epochs", "2", "--cache-dir", str(cache_root), "--workers", "1",
            "--quiet", "--precision", "fp32", "--class-weights", "--mixup", "0.4", "--seed", "5"]
    assert resnet_main([*args, "--run-dir", str(tmp_path / "resnet")]) == 0
    resnet = set(seen)
    seen.clear()
    assert vit_main([*args, "--run-dir", str(tmp_path / "vit")]) == 0
    assert set(seen) == resnet
    assert {(e, s) for e, s, _ in resnet} == {(e, s) for e in (0, 1) for s in range(3)}  # 10 train samples / 4
    for model in ("resnet", "vit"):  # mixup (and class weights) blended those batches, and the record says so
        assert read_record(tmp_path / model).training.mixup == 0.4


# ---- selection, validation, schedules -------------------------------------------------------------
def test_selection_and_validation_arithmetic():
    assert is_better("val_loss", 0.4, 0.5) and not is_better("val_loss", 0.5, 0.5)
    assert is_better("val_accuracy", 0.8, 0.7) and not is_better("val_accuracy", 0.7, 0.7)
    assert is_better("val_loss", 3.0, None) and not is_better("val_loss", math.nan, None)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    loss, accuracy = validation_scores(np.array([0, 1, 1]), probs)
    assert loss == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)
    assert accuracy == pytest.approx(2 / 3)


def test_learning_rate_schedules():
    lr = lambda e, s, w=0: learning_rate(e, base_lr=1.0, epochs=10, schedule=s, warmup_epochs=w)  # noqa: E731
    assert [lr(e, "cosine", 2) for e in (0, 1)] == pytest.approx([1 / 3, 2 / 3])  # linear warm-up
    assert lr(2, "cosine", 2) == pytest.approx(1.0) and lr(6, "cosine", 2) == pytest.approx(0.5)
    assert lr(9, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert [lr(e, "step") for e in (4, 5, 7, 8)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert lr(7, "constant") == 1.0
    assert TrainConfig(lr=2.0, epochs=10, warmup_epochs=0).learning_rate(0) == 2.0


# ---- precision --------------------------------------------------------------------------------------
def test_one_precision_policy():
    cpu, a100, t4 = Hardware("cpu", "CPU"), Hardware("cuda", "A100", gpu_bf16=True), Hardware("cuda", "T4")
    assert decide_precision("bf16", cpu).resolved == "bf16"
    assert decide_precision("auto", a100).resolved == "bf16"
    assert decide_precision("auto", t4).resolved == "fp16" and "scaler" in decide_precision("auto", t4).reason
    assert decide_precision("auto", cpu).resolved == "fp32"
    fast = decide_precision("auto", cpu, probe=lambda: {"fp32": 10.0, "bf16": 10.0 * CPU_BF16_MIN_SPEEDUP * 1.25})
    slow = decide_precision("auto", cpu, probe=lambda: {"fp32": 10.0, "bf16": 11.0})
    assert (fast.resolved, slow.resolved) == ("bf16", "fp32")
    assert slow.measurements == {"fp32_samples_per_second": 10.0, "bf16_samples_per_second": 11.0}
    assert "1.10x" in slow.reason


@pytest.mark.parametrize("ratios, resolved, close", [
    ((2.6,), "bf16", False),  # clear: measured once
    ((1.5,), "fp32", False),
    ((2.11, 2.05, 2.2), "fp32", True),  # all above the rule, but within its margin: close, fp32
    ((2.11, 1.9, 2.7), "fp32", True),  # on both sides of the rule
    ((2.2, 2.6), "bf16", False),  # a close first reading, then clearly above: bf16
    ((1.7, 1.3), "fp32", False),  # close, then clearly below
    ((1.9, 1.8, 1.7), "fp32", True),  # below, but never clear of the margin: said
])
def test_a_close_probe_is_measured_again_and_said(ratios, resolved, close):
    """A busy machine moves the probe's bf16/fp32 ratio (12.6x under load, 2.1x minutes later on one
    machine): near the 2.0x rule the probe is repeated, and a close call keeps fp32 and says so."""
    from common.runs.precision import CLOSE_CALL_PROBES

    calls = []

    def probe(fresh=False):
        calls.append(fresh)
        return {"fp32": 10.0, "bf16": 10.0 * ratios[len(calls) - 1]}

    decision = decide_precision("auto", Hardware("cpu", "CPU"), probe=probe)
    assert len(calls) == len(ratios) <= CLOSE_CALL_PROBES and calls[1:] == [True] * (len(ratios) - 1)
    assert decision.resolved == resolved
    assert ("close call" in decision.reason) == close == decision.measurements.get("close_call", False)
    if len(ratios) > 1:
        assert decision.measurements["bf16_over_fp32_probes"] == list(ratios)


def test_emulated_bf16_arithmetic_skips_the_probe_and_says_so():
    """A CPU whose bf16 matmul is not 2x fp32 (emulated: no AVX512-BF16 or AMX) cannot gain 2x in a bf16
    step: fp32 without timing any training step; a CPU with fast bf16 arithmetic is probed as before."""
    cpu = Hardware("cpu", "CPU")

    def never_probed(fresh=False):
        raise AssertionError("the probe ran")

    emulated = decide_precision("auto", cpu, probe=never_probed, bf16_matmul=lambda: 0.04)
    assert emulated.resolved == "fp32" and "0.04x" in emulated.reason and "not probed" in emulated.reason
    assert emulated.measurements == {"bf16_over_fp32_matmul": 0.04}
    # Keras' products on an AVX2 CPU read 0.86-1.80x while its bf16 steps ran at 0.03-0.08x: under 2x, no
    # step can meet the rule either
    keras_avx2 = decide_precision("auto", cpu, probe=never_probed, bf16_matmul=lambda: 1.8)
    assert keras_avx2.resolved == "fp32" and "1.80x" in keras_avx2.reason
    native = decide_precision("auto", cpu, probe=lambda fresh=False: {"fp32": 10.0, "bf16": 26.0},
                              bf16_matmul=lambda: 3.0)
    assert native.resolved == "bf16" and native.measurements["bf16_samples_per_second"] == 26.0
    assert decide_precision("fp32", cpu, probe=never_probed, bf16_matmul=never_probed).resolved == "fp32"


def test_the_bf16_matmul_ratio_is_measured_once_per_machine(tmp_path, monkeypatch):
    from common.runs.probe import REPROBE_ENV, cached_bf16_matmul_ratio

    monkeypatch.delenv(REPROBE_ENV, raising=False)
    measured = []

    def flops(precision):
        measured.append(precision)
        return {"fp32": 100.0, "bf16": 5.0}[precision]

    cache = tmp_path / "probes" / "matmul-x.json"
    assert cached_bf16_matmul_ratio(flops, cache)() == 0.05 and measured == ["bf16", "fp32"]
    assert cached_bf16_matmul_ratio(flops, cache)() == 0.05 and len(measured) == 2  # from the cache
    cache.write_text("{not json")
    assert cached_bf16_matmul_ratio(flops, cache)() == 0.05 and len(measured) == 4  # damaged: measured again
    monkeypatch.setenv(REPROBE_ENV, "1")
    assert cached_bf16_matmul_ratio(flops, cache)() == 0.05 and len(measured) == 6
    assert cached_bf16_matmul_ratio(flops, None)() == 0.05  # no cache folder: measured, nothing kept


def test_each_framework_measures_its_bf16_matmul_ratio_here(tmp_path):
    """The real checks, on this machine's CPU, whatever it is: a finite positive ratio, cached."""
    import torch

    from tf_transformer.train import bf16_matmul_check as keras_bf16_matmul_check
    from torch_resnet.train import bf16_matmul_check

    for check in (lambda: bf16_matmul_check(torch.device("cpu"), tmp_path / "torch"),
                  lambda: keras_bf16_matmul_check(tmp_path / "keras")):
        ratio = check()()
        assert math.isfinite(ratio) and ratio > 0
    assert sorted(p.parent.name for p in tmp_path.glob("*/matmul-*.json")) == ["keras", "torch"]


# ---- typed configs, CLI and record ---------------------------------------------------------------------
def test_cli_defaults_and_choices_come_from_the_dataclasses():
    parser = Parser(prog="x")
    add_data_arguments(parser)
    add_training_arguments(parser, presets={"tiny": None}, default_preset="tiny", defaults=TrainConfig(epochs=40))
    data, training, runtime = configs_from_args(parser.parse_args([]))
    assert data == DataConfig() and runtime == RuntimeConfig() and training == TrainConfig(epochs=40)
    actions = {a.dest: a for a in parser._actions}
    for f in fields(TrainConfig) + fields(DataConfig):
        if f.metadata.get("choices"):
            assert tuple(actions[f.name].choices) == f.metadata["choices"], f.name
    parsed = configs_from_args(parser.parse_args(["--shape", "8", "9", "10", "--flip-axes", "0", "2", "--no-augment"]))
    assert parsed[0].shape == (8, 9, 10) and parsed[1].flip_axes == (0, 2) and parsed[1].augment is False


def test_run_record_round_trips_typed(tmp_path):
    record = fake_record(lr=0.01, flip_axes=(1, 2))
    write_record(tmp_path, record)
    assert read_record(tmp_path) == record
    assert isinstance(read_record(tmp_path).training, TrainConfig)
    broken = to_jsonable(record)
    broken["training"]["momentum"] = 0.9
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['momentum'\] for TrainConfig"):
        from_jsonable(RunRecord, broken, origin="config.json")
    (tmp_path / "config.json").write_text('{"model": "torch_resnet"}')
    with pytest.raises(ConfigError, match="run record format None"):
        read_record(tmp_path)


def test_identity_lists_every_difference():
    stored = fake_record(lr=0.001, epochs=5).identity()
    assert identity_differences(stored, fake_record(lr=0.001, epochs=9).identity()) == []  # more epochs: allowed
    diffs = identity_differences(stored, fake_record(lr=0.1, epochs=5, split_hash="zzz",
                                                     classes=("pos", "neg")).identity())
    assert diffs == ["split_hash: abc -> zzz", "classes: ['neg', 'pos'] -> ['pos', 'neg']", "training.lr: 0.001 -> 0.1"]


# ---- FLOP counts ---------------------------------------------------------------------------------------
def test_transformer_flops_of_the_tiny_preset_by_hand():
    from tf_transformer.config import preset
    from tf_transformer.flops import flops_per_sample

    # 16^3 input, 4^3 patches -> 64 tokens; stem 1->32 (k4) then 32->16 (k1); 3 blocks of width 16, 2 heads x 8.
    stem = 2 * 4**3 * 1 * 32 * 64 + 2 * 1 * 32 * 16 * 64
    block = 2 * 64 * 16 * 16 * 3 + 2 * 64 * 64 * 16 * 2 + 2 * 64 * 16 * 16 + 2 * 64 * 16 * 32 + 2 * 64 * 32 * 16
    head = 2 * (16 * 3) * 16 + 2 * 16 * 2
    assert flops_per_sample(preset("tiny").with_data(input_shape=(16,) * 3, num_classes=2)) == stem + 3 * block + head == 1_902_144


def test_resnet_flops_equal_a_count_over_the_modules():
    import torch
    from torch import nn

    from torch_resnet.config import preset
    from torch_resnet.model import build_resnet, flops_per_sample

    config = preset("tiny").with_data(input_shape=(16,) * 3, num_classes=2)
    model, total = build_resnet(config).eval(), [0]

    def count(module, inputs, output):
        if isinstance(module, nn.Conv3d):
            total[0] += 2 * math.prod(module.kernel_size) * module.in_channels * module.out_channels * output[0, 0].numel()
        elif isinstance(module, nn.Linear):
            total[0] += 2 * module.in_features * module.out_features

    for m in model.modules():
        m.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, 1, *config.input_shape))
    assert flops_per_sample(config) == total[0] > 0


# ---- the timed probe ----------------------------------------------------------------------------------
class StubClock:
    """A timer whose steps take `seconds[candidate]`: the probe's arithmetic without real timing."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds, self.now = seconds, 0.0

    def __call__(self) -> float:
        return self.now

    def step_for(self, candidate: str):
        def step():
            self.now += self.seconds[candidate]
        return step


def test_probe_measures_each_candidate_once_per_machine(tmp_path):
    from common.runs.probe import TIMED_STEPS, timed_probe

    clock = StubClock({"fp32/ncdhw": 0.8, "fp32/channels_last": 0.4, "bf16/ncdhw": 0.5, "bf16/channels_last": 0.25})
    calls = []

    def make_step(candidate):
        calls.append(candidate)
        return clock.step_for(candidate)

    cache = tmp_path / "probe.json"
    speeds = timed_probe(["fp32/ncdhw", "fp32/channels_last"], make_step, batch_size=8, cache_file=cache, timer=clock)
    assert speeds == {"fp32/ncdhw": 10.0, "fp32/channels_last": 20.0}
    assert clock.now == pytest.approx((1 + TIMED_STEPS) * (0.8 + 0.4))  # warm-up + timed steps
    both = timed_probe(list(clock.seconds), make_step, batch_size=8, cache_file=cache, timer=clock)
    assert calls == ["fp32/ncdhw", "fp32/channels_last", "bf16/ncdhw", "bf16/channels_last"]  # cached ones skipped
    assert both["bf16/channels_last"] == 32.0


def test_probe_is_not_fooled_by_a_busy_spell():
    """The machine is 3x slower for the first five steps of the probe (another job finishing): timed in
    interleaved rounds and judged by the fastest step, both candidates see the same spell."""
    from common.runs.probe import timed_probe

    clock = StubClock({"fp32/ncdhw": 0.8, "fp32/channels_last": 0.4})
    calls = [0]

    def make_step(candidate):
        def step():
            calls[0] += 1
            clock.now += clock.seconds[candidate] * (3 if calls[0] <= 5 else 1)
        return step

    speeds = timed_probe(["fp32/ncdhw", "fp32/channels_last"], make_step, batch_size=8, timer=clock)
    assert speeds == {"fp32/ncdhw": 10.0, "fp32/channels_last": 20.0}  # the true 2x, not 0.67x


def test_layout_and_precision_follow_the_probe():
    from torch_resnet.train import precision_probe, resolve_channels_last

    def amd_like(candidates):  # channels_last 2x faster; bf16 no faster than fp32
        table = {"fp32/ncdhw": 10.0, "fp32/channels_last": 20.0, "bf16/ncdhw": 10.0, "bf16/channels_last": 21.0}
        return {c: table[c] for c in candidates}

    def amx_like(candidates):  # channels_last slower for a narrow model; bf16 2.5x
        table = {"fp32/ncdhw": 10.0, "fp32/channels_last": 6.0, "bf16/ncdhw": 25.0, "bf16/channels_last": 15.0}
        return {c: table[c] for c in candidates}

    cpu = Hardware("cpu", "CPU")
    assert decide_precision("auto", cpu, probe=precision_probe(None, amd_like)).resolved == "fp32"
    assert resolve_channels_last(None, "fp32", amd_like) == (True, "probe: channels_last 2.00x NCDHW in fp32")
    assert decide_precision("auto", cpu, probe=precision_probe(None, amx_like)).resolved == "bf16"
    assert resolve_channels_last(None, "bf16", amx_like)[0] is False
    assert resolve_channels_last(False, "fp32", amd_like) == (False, "--no-channels-last given")  # a flag wins
    only_ncdhw = precision_probe(False, amd_like)()  # layout fixed: precision judged in that layout only
    assert only_ncdhw == {"fp32": 10.0, "bf16": 10.0}


def test_both_losses_are_one_formula_with_weights_and_label_smoothing():
    import keras
    import torch

    from common.runs.config import TrainConfig
    from tf_transformer.train import make_loss
    from torch_resnet.train import weighted_cross_entropy

    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(6, 3)).astype(np.float32), np.array([0, 1, 2, 2, 1, 0])
    weight = np.array([0.5, 1.0, 2.0, 2.0, 1.0, 0.5], np.float32)
    one_hot = np.eye(3, dtype=np.float32)[y]
    soft = rng.dirichlet(np.ones(3), size=6).astype(np.float32)  # mixup's blended targets
    for smoothing in (0.0, 0.1):
        for target in (one_hot, soft):
            ours = weighted_cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), torch.from_numpy(weight),
                                          label_smoothing=smoothing).item()
            keras_loss = make_loss(TrainConfig(label_smoothing=smoothing))(target, logits, sample_weight=weight)
            assert float(keras.ops.convert_to_numpy(keras_loss)) == pytest.approx(ours, rel=1e-5)
        by_index = (torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y), reduction="none",
                                                      label_smoothing=smoothing) * torch.from_numpy(weight)).mean()
        assert weighted_cross_entropy(torch.from_numpy(logits), torch.from_numpy(one_hot), torch.from_numpy(weight),
                                      label_smoothing=smoothing).item() == pytest.approx(by_index.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="--label-smoothing 1.0"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ConfigError, match="--grad-clip -1"):
        TrainConfig(grad_clip=-1)
