"""The BIDS source: a tree generated here exercises every rule of common/data/bids.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.data.bids import entities, parse_filters, read_bids
from common.data.dataset import prepare_dataset
from common.errors import DataError
from tests.conftest import blob_volume, write_nifti


def make_bids(root, *, participants="participant_id\tgroup\nsub-01\tAD\nsub-02\tCN\nsub-03\tCN\nsub-04\tn/a\n",
              images=("sub-01/ses-M00/anat/sub-01_ses-M00_T1w.nii.gz", "sub-01/ses-M12/anat/sub-01_ses-M12_T1w.nii.gz",
                      "sub-02/anat/sub-02_T1w.nii.gz", "sub-04/anat/sub-04_T1w.nii.gz")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    if participants is not None:
        (root / "participants.tsv").write_text(participants)
    rng = np.random.default_rng(0)
    for i, rel in enumerate(images):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_nifti(root / rel, blob_volume(rng, i % 2))
    return root


def test_sessions_are_samples_of_one_subject_and_missing_rows_are_reported(tmp_path, capsys):
    source = read_bids(make_bids(tmp_path / "bids"), label_column="group")
    assert source.kind == "bids" and source.classes == ["AD", "CN"]
    assert [(s.sample_id, s.subject_id, s.label) for s in source.samples] == [
        ("sub-02", "sub-02", "CN"), ("sub-01_ses-M00", "sub-01", "AD"), ("sub-01_ses-M12", "sub-01", "AD")]
    err = capsys.readouterr().err
    assert "1 participant(s) without a label (n/a) in participants.tsv left out: sub-04" in err
    assert "1 participant(s) without a T1w image left out: sub-03" in err


def test_filters_pick_one_session(tmp_path):
    images = ("sub-01/ses-M00/anat/sub-01_ses-M00_T1w.nii.gz", "sub-01/ses-M12/anat/sub-01_ses-M12_T1w.nii.gz",
              "sub-02/ses-M00/anat/sub-02_ses-M00_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz")
    source = read_bids(make_bids(tmp_path / "bids", images=images), label_column="group", filters=["ses=M00"])
    assert [s.sample_id for s in source.samples] == ["sub-01_ses-M00", "sub-02_ses-M00"]  # sub-03: no session


def test_bad_trees_are_refused_by_name(tmp_path):
    with pytest.raises(DataError, match="without participants.tsv"):
        read_bids(make_bids(tmp_path / "a", participants=None), label_column="group")
    with pytest.raises(DataError, match="participants.tsv: no column 'sex'.*--label-column"):
        read_bids(make_bids(tmp_path / "b"), label_column="sex")
    orphan = make_bids(tmp_path / "c", images=("sub-01/anat/sub-01_T1w.nii.gz", "sub-09/anat/sub-09_T1w.nii.gz"))
    with pytest.raises(DataError, match="sub-09_T1w.nii.gz: participant 'sub-09' has no row in"):
        read_bids(orphan, label_column="group")
    runs = make_bids(tmp_path / "d", images=("sub-01/anat/sub-01_run-1_T1w.nii.gz", "sub-01/anat/sub-01_run-2_T1w.nii.gz",
                                            "sub-02/anat/sub-02_run-1_T1w.nii.gz"))
    with pytest.raises(DataError, match="sub-01: two T1w images, sub-01_run-1_T1w.nii.gz and sub-01_run-2_T1w.nii.gz.*"
                                        "--bids-filter"):
        read_bids(runs, label_column="group")
    assert [s.sample_id for s in read_bids(runs, label_column="group", filters=["run=1"]).samples] == [
        "sub-01_run-1", "sub-02_run-1"]
    moved = make_bids(tmp_path / "e", images=("sub-01/anat/sub-02_T1w.nii.gz",))
    with pytest.raises(DataError, match="do not match the folders"):
        read_bids(moved, label_column="group")
    twice = make_bids(tmp_path / "f", participants="participant_id\tgroup\nsub-01\tAD\nsub-01\tCN\n")
    with pytest.raises(DataError, match="row 3: participant 'sub-01' is listed twice"):
        read_bids(twice, label_column="group")
    bare = make_bids(tmp_path / "g", participants="participant_id\tgroup\n01\tAD\n")
    with pytest.raises(DataError, match="participant_id '01' is not sub-<label>"):
        read_bids(bare, label_column="group")
    with pytest.raises(DataError, match="no T1w images matching"):
        read_bids(make_bids(tmp_path / "h"), label_column="group", filters=["ses=M99"])
    with pytest.raises(DataError, match="expected KEY=VALUE"):
        parse_filters(["ses"])
    with pytest.raises(DataError, match="is not a BIDS key-value entity"):
        entities(tmp_path / "sub-01_bad_T1w.nii.gz")


def test_a_bids_dataset_trains_through_the_cache_and_keeps_sessions_together(tmp_path):
    rows = "participant_id\tgroup\n" + "".join(f"sub-{i:02d}\t{'AD' if i % 2 else 'CN'}\n" for i in range(12))
    images = [f"sub-{i:02d}/ses-{s}/anat/sub-{i:02d}_ses-{s}_T1w.nii.gz" for i in range(12) for s in ("M00", "M12")]
    root = make_bids(tmp_path / "bids", participants=rows, images=images)
    dataset = prepare_dataset(root, label_column="group", cache_root=tmp_path / "cache", progress=False)
    assert dataset.source_kind == "bids"
    owner = {}
    for split in ("train", "val", "test"):
        for subject in dataset.split(split).subject_ids:
            assert owner.setdefault(subject, split) == split  # both sessions in the same split
    assert sum(len(dataset.split(s)) for s in ("train", "val", "test")) == 24


def test_cli_reads_bids_options(tmp_path, capsys):
    from common.cli import main

    rows = "participant_id\tgroup\n" + "".join(f"sub-{i:02d}\t{'AD' if i % 2 else 'CN'}\n" for i in range(10))
    root = make_bids(tmp_path / "bids", participants=rows,
                     images=[f"sub-{i:02d}/anat/sub-{i:02d}_acq-fast_T1w.nii.gz" for i in range(10)])
    assert main(["prepare", "--data", str(root), "--label-column", "group", "--bids-filter", "acq=fast",
                 "--cache-dir", str(tmp_path / "cache"), "--shape", "8", "8", "8"]) == 0
    assert "total" in capsys.readouterr().out
    assert main(["prepare", "--data", str(root), "--label-column", "group", "--bids-filter", "acq",
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    assert "--bids-filter 'acq': expected KEY=VALUE" in capsys.readouterr().err


def test_all_labels_missing_names_the_labels_not_the_images(tmp_path):
    root = make_bids(tmp_path / "bids", participants="participant_id\tgroup\nsub-01\tn/a\nsub-02\t\nsub-04\tn/a\n")
    with pytest.raises(DataError, match=r"participants.tsv: every participant with a T1w image has no 'group'"):
        read_bids(root, label_column="group")
