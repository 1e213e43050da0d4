"""Data of a kind the tool had not seen: a many-class binary .npz with empty volumes, binary NIfTI,
unnamed integer classes, and reports for ten classes."""

import numpy as np
import pytest
from conftest import write_nifti

from common.data.dataset import prepare_dataset
from common.data.preprocess import PreprocessConfig
from common.errors import DataError

SHAPES = ("sphere", "cube", "cylinder", "cone", "shell", "slab", "cross", "ring", "pair", "line")
EMPTY = {"train": [3, 7, 11], "val": [2], "test": [5]}  # all-zero volumes, as real occupancy data has


def shape_volume(kind: int, rng: np.random.Generator, n: int = 12) -> np.ndarray:
    """A binary 12^3 occupancy grid of one of ten solids, jittered in place and size."""
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).astype(float)
    c = n / 2 + rng.uniform(-1, 1, 3)[:, None, None, None]
    d = grid - c
    r = rng.uniform(3, 4.5)
    radial = np.sqrt(d[1] ** 2 + d[2] ** 2)
    solids = [
        (d**2).sum(0) <= r**2, np.abs(d).max(0) <= r * 0.8, (radial <= r * 0.7) & (np.abs(d[0]) <= r),
        (radial <= (r - d[0]) * 0.6) & (np.abs(d[0]) <= r), np.abs(np.sqrt((d**2).sum(0)) - r) <= 0.8,
        np.abs(d[0]) <= 1, (np.abs(d) <= 1).sum(0) >= 2, (np.abs(radial - r) <= 0.8) & (np.abs(d[0]) <= 1),
        ((d - 2.5) ** 2).sum(0) <= 4, (np.abs(d[1]) <= 0.8) & (np.abs(d[2]) <= 0.8),
    ]
    return solids[kind].astype(np.uint8)


@pytest.fixture
def shapes_npz(tmp_path):
    """A MedMNIST-style .npz that is not MedMNIST: 10 classes of binary solids, 5 empty volumes."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in (("train", 4), ("val", 2), ("test", 2)):
        labels = np.repeat(np.arange(10), per_class)
        images = np.stack([shape_volume(k, rng) for k in labels])
        images[EMPTY[split]] = 0
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    path = tmp_path / "shapes10.npz"
    np.savez(path, **arrays)
    return path


def test_every_invalid_sample_is_listed_in_one_error(shapes_npz, cache_root):
    with pytest.raises(DataError) as info:
        prepare_dataset(shapes_npz, cache_root=cache_root, preprocess=PreprocessConfig(shape=(12, 12, 12)),
                        progress=False)
    message = str(info.value)
    assert message.startswith("5 of 80 samples are invalid:")
    for split, rows in EMPTY.items():
        for i in rows:
            assert f"shapes10.npz {split}[{i}]: constant volume" in message
    assert "--drop-invalid" in message
    assert not list((cache_root / "volumes").iterdir())  # nothing half-built left behind


def test_drop_invalid_drops_warns_and_records(shapes_npz, cache_root, capsys):
    from common.runs.record import data_record

    kwargs = dict(cache_root=cache_root, preprocess=PreprocessConfig(shape=(12, 12, 12)), progress=False)
    dataset = prepare_dataset(shapes_npz, drop_invalid=True, **kwargs)
    assert "left out 5 of 80 samples" in capsys.readouterr().err
    dropped = {"train_00003", "train_00007", "train_00011", "val_00002", "test_00005"}
    assert set(dataset.dropped) == dropped == set(data_record(dataset).dropped)
    kept = {i for ids in dataset.splits["sample_ids"].values() for i in ids}
    assert len(kept) == 75 and not kept & dropped
    assert sum(len(dataset.split(s)) for s in ("train", "val", "test")) == 75
    with pytest.raises(DataError, match="5 of 80 samples are invalid"):  # the same cache, without the flag
        prepare_dataset(shapes_npz, **kwargs)


def test_binary_nifti_under_zscore_says_which_normalisation_works(tmp_path):
    from common.data.preprocess import preprocess_file

    path = write_nifti(tmp_path / "mask.nii.gz", shape_volume(0, np.random.default_rng(1)))
    with pytest.raises(DataError, match=r"2 distinct values \[0.0, 1.0\].*use --normalize minmax"):
        preprocess_file(path, PreprocessConfig(shape=(8, 8, 8), normalize="zscore"))
    assert preprocess_file(path, PreprocessConfig(shape=(8, 8, 8), normalize="minmax")).max() <= 1


def test_class_names_for_integer_labels(shapes_npz, cache_root):
    dataset = prepare_dataset(shapes_npz, cache_root=cache_root, preprocess=PreprocessConfig(shape=(12, 12, 12)),
                              progress=False, drop_invalid=True, class_names=SHAPES)
    assert dataset.classes == list(SHAPES)
    assert dataset.class_counts()["train"]["cone"] == 4 and dataset.class_counts()["train"]["sphere"] == 3
    with pytest.raises(DataError, match="10 distinct labels"):
        prepare_dataset(shapes_npz, cache_root=cache_root, class_names=SHAPES[:3], drop_invalid=True, progress=False)


def test_medmnist_credit_only_for_medmnist_files():
    from conftest import fake_record

    from common.data.sources import is_medmnist_file
    from common.evaluation.report import data_credit

    assert is_medmnist_file("x/adrenalmnist3d.npz") and is_medmnist_file("nodulemnist3d_64.npz")
    assert not is_medmnist_file("shapes10.npz")
    data = fake_record().data
    other = data.__class__(**{**data.__dict__, "source": "medmnist", "location": "/d/shapes10.npz"})
    assert data_credit(other) is None
    medmnist = data.__class__(**{**other.__dict__, "location": "/d/adrenalmnist3d.npz"})
    assert "MedMNIST v2" in data_credit(medmnist)
    named = data.__class__(**{**other.__dict__, "name": "Shapes-10", "licence": "CC0"})
    assert data_credit(named) == "Data: Shapes-10: CC0."


def test_ten_class_confusion_figure_is_legible():
    import matplotlib.pyplot as plt

    from common.evaluation.plots import confusion_figure

    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 30, (10, 10)) + np.eye(10, dtype=int) * 60
    fig = confusion_figure({"Transformer": matrix, "ResNet": matrix.T}, list(SHAPES))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.get_size_inches() * fig.dpi
    assert 0.8 < width / height < 1.25  # no 4:1 strip of mostly empty space
    for ax in fig.axes:
        labels = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) == 10
        assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])
        cell = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
        for text in ax.texts:  # every cell's number fits inside its cell
            assert text.get_window_extent(renderer).width < cell
    plt.close(fig)
