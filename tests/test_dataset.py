import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data, write_nifti

from common.data.dataset import prepare_dataset
from common.data.preprocess import PreprocessConfig
from common.data.sources import read_folder, read_manifest, read_medmnist
from common.data.splits import SplitConfig
from common.errors import DataError

TINY = PreprocessConfig(shape=(8, 8, 8))


def test_manifest_to_cached_splits(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=20, scans=2)
    ds = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    counts = ds.class_counts()
    assert sum(sum(c.values()) for c in counts.values()) == 40
    train = ds.split("train")
    assert train.x.shape[1:] == (8, 8, 8) and isinstance(train.x, np.memmap)
    assert ds.splits_path.is_file() and set(ds.splits["sample_ids"]) == {"train", "val", "test"}
    subjects = {name: set(ds.split(name).subject_ids) for name in ("train", "val", "test")}
    assert not (subjects["train"] & subjects["val"]) and not (subjects["train"] & subjects["test"])


def test_cache_is_reused_and_rebuilt_on_change(make_manifest, cache_root, monkeypatch):
    manifest = make_manifest()
    first = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    import common.data.cache as cache

    def fail(*a, **k):
        raise AssertionError("NIfTI re-read for an unchanged cache")

    monkeypatch.setattr(cache, "preprocess_file_qc", fail)
    again = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert again.folder == first.folder
    monkeypatch.undo()
    other = prepare_dataset(manifest, label_column="label", preprocess=PreprocessConfig(shape=(6, 6, 6)),
                            cache_root=cache_root, progress=False)
    assert other.folder != first.folder
    volume = manifest.parent / "s00_0.nii.gz"
    write_nifti(volume, np.random.default_rng(1).normal(size=(12, 12, 12)))
    os.utime(volume, ns=(1, 1))
    changed = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert changed.folder != first.folder


def _prepare(args):
    manifest, cache_root = args
    return str(prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root,
                               progress=False).folder)


def test_two_processes_building_one_cache(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=16)
    with ProcessPoolExecutor(2) as pool:
        folders = list(pool.map(_prepare, [(manifest, cache_root)] * 2))
    assert folders[0] == folders[1]
    leftovers = [p.name for p in (cache_root / "volumes").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    assert np.load(os.path.join(folders[0], "volumes.npy")).shape == (16, 8, 8, 8)


def test_workers_give_identical_cache(make_manifest, tmp_path):
    manifest = make_manifest()
    one = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=tmp_path / "a", progress=False)
    two = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=tmp_path / "b", workers=2,
                          progress=False)
    np.testing.assert_array_equal(np.load(one.folder / "volumes.npy"), np.load(two.folder / "volumes.npy"))


def test_bad_volume_leaves_no_cache(make_manifest, cache_root):
    manifest = make_manifest()
    write_nifti(manifest.parent / "s03_0.nii.gz", np.full((12, 12, 12), 1.0))
    with pytest.raises(DataError, match="s03_0.nii.gz: constant volume"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, workers=2,
                        progress=False)
    assert not any((cache_root / "volumes").iterdir())


def test_a_read_only_cache_is_one_line_naming_it(make_manifest, cache_root, monkeypatch):
    """A cache folder this user cannot write (root ignores chmod, so the refusal is simulated where the build
    starts): the error names the folder and the option, and no scan is read first."""
    import tempfile

    from common.data import cache

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    read = []
    monkeypatch.setattr(cache, "_write_cache", lambda *a, **k: read.append(1))
    with pytest.raises(DataError, match=r"cache .*volumes: cannot write a new dataset's cache there \(Permission "
                                        r"denied\); choose a writable --cache-dir"):
        prepare_dataset(make_manifest(), label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert read == []
    if os.geteuid() != 0:  # and for real, where permissions apply
        monkeypatch.undo()
        cache_root.mkdir(parents=True, exist_ok=True)
        (cache_root / "volumes").mkdir(exist_ok=True)
        os.chmod(cache_root / "volumes", 0o555)
        with pytest.raises(DataError, match="cannot write a new dataset's cache there"):
            prepare_dataset(make_manifest(), label_column="label", preprocess=TINY, cache_root=cache_root,
                            progress=False)


def test_missing_file_is_named_before_any_work(make_manifest, cache_root):
    manifest = make_manifest()
    (manifest.parent / "s05_0.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labels.csv row 7: file not found"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)


def test_every_missing_file_is_listed_and_drop_invalid_drops_them(make_manifest, cache_root, capsys):
    import os

    manifest = make_manifest(n_subjects=40)
    for i in range(25):  # 25 missing files: the first 20 listed and a count
        (manifest.parent / f"s{i:02d}_0.nii.gz").unlink()
    with pytest.raises(DataError) as error:
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    text = str(error.value)
    assert text.startswith("25 of 40 samples are invalid:") and "... and 5 more" in text
    assert "labels.csv row 2: file not found" in text and "--drop-invalid" in text
    (manifest.parent / "s30_0.nii.gz").unlink()
    os.symlink(manifest.parent / "s30_0.nii.gz", manifest.parent / "s30_0.nii.gz.link")
    (manifest.parent / "s30_0.nii.gz.link").rename(manifest.parent / "s30_0.nii.gz")  # a link to itself: a loop
    dataset = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root,
                              progress=False, drop_invalid=True)
    assert len(dataset.dropped) == 26 and "s30_0" in dataset.dropped
    assert sum(len(ids) for ids in dataset.splits["sample_ids"].values()) == 14
    assert "left out 26 unreadable file(s)" in capsys.readouterr().err


def test_predict_lists_every_missing_input(tmp_path):
    from common.data.inference import input_paths

    paths = [tmp_path / f"x{i}.nii.gz" for i in range(3)]
    with pytest.raises(DataError, match=r"3 of 3 input files not found:\n  .*x0.nii.gz\n  .*x1.nii.gz"):
        input_paths(paths, None)


@pytest.mark.parametrize(
    "extra,columns,message",
    [
        ([{"path": "s00_0.nii.gz", "subject_id": "x", "label": ""}], None, "row 14 .*missing label"),
        ([{"path": "s00_0.nii.gz", "subject_id": "x", "label": "a"}], None, "duplicate sample id 's00_0'"),
        ([], ("path", "subject_id"), r"missing required column\(s\) \['label'\]"),
    ],
)
def test_manifest_errors(make_manifest, extra, columns, message):
    manifest = make_manifest(extra_rows=extra, **({"columns": columns} if columns else {}))
    with pytest.raises(DataError, match=message):
        read_manifest(manifest, label_column="label")


def test_label_not_in_class_list(make_manifest):
    manifest = make_manifest(classes=("a", "b", "c"))
    with pytest.raises(DataError, match=r"label 'c' is not in the class list \['a', 'b'\]"):
        read_manifest(manifest, label_column="label", classes=["a", "b"])


def test_class_with_too_few_subjects(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=9, extra_rows=[{"path": "s00_0.nii.gz", "subject_id": "sub00", "label": "z"}])
    # the extra row reuses a file: give it its own copy so only the class count is wrong
    (manifest.parent / "z.nii.gz").write_bytes((manifest.parent / "s00_0.nii.gz").read_bytes())
    text = manifest.read_text().replace("s00_0.nii.gz,sub00,z", "z.nii.gz,subz,z")
    manifest.write_text(text)
    with pytest.raises(DataError, match="class 'z' has 1 subject"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)


def test_manifest_split_column_takes_precedence(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=6, columns=("path", "subject_id", "label"))
    lines = manifest.read_text().splitlines()
    splits = ["train", "train", "val", "val", "test", "test"]
    manifest.write_text("\n".join([lines[0] + ",split"] + [f"{line},{s}" for line, s in zip(lines[1:], splits)]) + "\n")
    ds = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
    assert ds.splits["method"] == "fixed by source"
    assert ds.splits["sample_ids"]["test"] == ["s04_0", "s05_0"]


def test_manifest_split_column_with_subject_leak_is_refused(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=6, scans=2)
    lines = manifest.read_text().splitlines()
    splits = ["train", "test"] + ["train", "train", "val", "val", "test", "test"] * 2
    manifest.write_text("\n".join([lines[0] + ",split"] + [f"{line},{s}" for line, s in zip(lines[1:], splits)]) + "\n")
    with pytest.raises(DataError, match="subject 'sub00' appears in both 'train' and 'test'"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)


def test_kfold_splits_cover_every_subject_once(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=20)
    tests = []
    for fold in range(4):
        ds = prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False,
                             split=SplitConfig(folds=4, fold=fold, ratios=(0.8, 0.2, 0.0)))
        tests += ds.splits["sample_ids"]["test"]
    assert sorted(tests) == sorted(f"s{i:02d}_0" for i in range(20))


def test_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cn", "ad"):
        (tmp_path / label).mkdir()
        for i in range(3):
            write_nifti(tmp_path / label / f"{label}{i}.nii", rng.normal(size=(6, 6, 6)))
    (tmp_path / ".ipynb_checkpoints").mkdir()  # a hidden folder is never a class
    write_nifti(tmp_path / ".ipynb_checkpoints" / "cn0-checkpoint.nii", rng.normal(size=(6, 6, 6)))
    source = read_folder(tmp_path)
    assert source.classes == ["ad", "cn"] and len(source.samples) == 6


def test_medmnist_npz_keeps_official_split(tmp_path, cache_root):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        arrays[f"{split}_images"] = (rng.random((n, 8, 8, 8)) > 0.5).astype(np.uint8) * 255
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    np.savez(tmp_path / "toy.npz", **arrays)
    ds = prepare_dataset(tmp_path / "toy.npz", cache_root=cache_root, progress=False,
                         preprocess=PreprocessConfig(shape=(8, 8, 8), normalize="minmax"))
    assert {k: len(v) for k, v in ds.splits["sample_ids"].items()} == {"train": 10, "val": 4, "test": 6}
    assert ds.split("val").x.max() == 1.0


def _npz(path, *, train_labels=None, val_images=None, object_labels=False):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = (rng.random((n, 4, 4, 4)) > 0.5).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    if train_labels is not None:
        arrays["train_labels"] = np.asarray(train_labels).reshape(-1, 1)
    if val_images is not None:
        arrays["val_images"], arrays["val_labels"] = val_images, np.zeros((0, 1), np.uint8)
    if object_labels:
        arrays["train_labels"] = np.array([[0], [1], [0], [1], [0], None], dtype=object)
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_labels=[0, 1, np.nan, 1, 0, 1]), r"train_labels: 1 label\(s\) are not whole numbers >= 0 \(e.g. \[nan\]\)"),
    (dict(train_labels=[0, 1, 0.5, 1, 0, 1]), r"train_labels: 1 label\(s\) are not whole numbers"),
    (dict(train_labels=[0, 1, -1, 1, 0, 1]), r"not whole numbers >= 0"),
    (dict(val_images=np.zeros((0, 4, 4, 4), np.uint8)), r"val_images is empty"),
    (dict(object_labels=True), r"object arrays"),
])
def test_medmnist_labels_that_are_not_classes_are_refused(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        read_medmnist(_npz(tmp_path / "x.npz", **kwargs))


def test_medmnist_missing_arrays(tmp_path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((2, 4, 4, 4)))
    with pytest.raises(DataError, match="bad.npz: missing MedMNIST arrays"):
        read_medmnist(tmp_path / "bad.npz")


def test_demo_is_deterministic(cache_root, tmp_path):
    a = prepare_dataset("demo", cache_root=cache_root, preprocess=TINY, progress=False)
    b = prepare_dataset("demo", cache_root=tmp_path / "other", preprocess=TINY, progress=False)
    np.testing.assert_array_equal(np.load(a.folder / "volumes.npy"), np.load(b.folder / "volumes.npy"))
    assert a.classes == ["control", "lesion"] and a.split_hash == b.split_hash


def test_demo_record_names_no_machine_path(cache_root, tmp_path):
    """A kept demo record is committed and read elsewhere: it names the demo, not this machine's cache."""
    from common.runs.record import data_record

    a = prepare_dataset("demo", cache_root=cache_root, preprocess=TINY, progress=False)
    b = prepare_dataset("demo", cache_root=tmp_path / "other", preprocess=TINY, progress=False)
    assert Path(a.location).is_absolute()  # where this machine's files are ...
    assert data_record(a).location == data_record(b).location == "demo"  # ... is not what the record names


@needs_shared_data("ixi_t1_hh", "labels.csv")
@pytest.mark.slow
def test_real_ixi_manifest_loads_and_conforms(cache_root):
    ds = prepare_dataset(SHARED_DATA / "ixi_t1_hh" / "labels.csv", label_column="age_group", cache_root=cache_root,
                         preprocess=PreprocessConfig(shape=(48, 48, 40)), workers=2, progress=False)
    counts = ds.class_counts()
    assert sum(sum(c.values()) for c in counts.values()) == 181
    assert sum(counts[s]["under40"] for s in counts) == 69
    volumes = np.load(ds.folder / "volumes.npy", mmap_mode="r")
    assert volumes.shape == (181, 48, 48, 40)
    assert np.isfinite(volumes[:5].astype(np.float32)).all()


@needs_shared_data("medmnist", "adrenalmnist3d.npz")
def test_real_adrenalmnist_keeps_official_split(cache_root):
    ds = prepare_dataset(SHARED_DATA / "medmnist" / "adrenalmnist3d.npz", cache_root=cache_root,
                         preprocess=PreprocessConfig(shape=(28, 28, 28), normalize="minmax"), progress=False)
    assert {k: len(v) for k, v in ds.splits["sample_ids"].items()} == {"train": 1188, "val": 98, "test": 298}


@pytest.mark.parametrize("ratios", [(0.8, 0.0, 0.2), (0.5, 0.2, 0.2), (0.0, 0.5, 0.5)])
def test_split_ratios_need_train_and_val(ratios):
    with pytest.raises(DataError, match="split ratios"):
        SplitConfig(ratios=ratios)


def test_manifest_split_column_without_val_is_refused(make_manifest, cache_root):
    manifest = make_manifest(n_subjects=4)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([lines[0] + ",split"] + [f"{line},{s}" for line, s in
                                                           zip(lines[1:], ["train", "train", "test", "test"])]) + "\n")
    with pytest.raises(DataError, match="the val split is empty"):
        prepare_dataset(manifest, label_column="label", preprocess=TINY, cache_root=cache_root, progress=False)
