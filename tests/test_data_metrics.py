"""Dataset layouts, class order, group-wise folds; metrics against hand computations."""
import os

import numpy as np
import pytest

from xvad.data import DatasetError, group_kfold, group_split, load_dataset, order_classes
from xvad.metrics import classification_metrics, roc_auc, summarize_folds


def touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()


def test_folder_layout_with_groups(tmp_path):
    for i in range(6):
        touch(str(tmp_path / "fight" / f"fi{i:03d}.mp4"))
        touch(str(tmp_path / "noFight" / f"nofi{i:03d}.mp4"))
    touch(str(tmp_path / "fight" / "notes.txt"))
    rows = ["clip,label,group"] + [f"fi{i:03d},fight,g{i // 2}" for i in range(6)] + \
           [f"nofi{i:03d},noFight,g{i // 2}" for i in range(6)]
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path))
    assert data.classes == ["noFight", "fight"]  # the normal-like class first: index 1 is the alert
    assert len(data) == 12
    got = {os.path.relpath(s.path, tmp_path): (s.label, s.group) for s in data.samples}
    assert got == {**{os.path.join("fight", f"fi{i:03d}.mp4"): (1, f"g{i // 2}") for i in range(6)},
                   **{os.path.join("noFight", f"nofi{i:03d}.mp4"): (0, f"g{i // 2}") for i in range(6)}}


def test_csv_layout_relative_paths(tmp_path):
    touch(str(tmp_path / "v" / "a.mp4"))
    touch(str(tmp_path / "v" / "b.mp4"))
    (tmp_path / "list.csv").write_text("path,label,group\nv/a.mp4,gunshot,x\nv/b.mp4,normal,y\n")
    data = load_dataset(str(tmp_path / "list.csv"))
    assert data.classes == ["normal", "gunshot"]
    assert data.samples[0].path == str(tmp_path / "v" / "a.mp4") and data.samples[0].label == 1


def test_explicit_class_order_and_errors(tmp_path):
    assert order_classes(["b", "a", "c"], ["c", "b", "a"]) == ["c", "b", "a"]
    assert order_classes(["fight", "accident", "normal"]) == ["normal", "accident", "fight"]
    with pytest.raises(DatasetError):
        order_classes(["a", "b"], ["a"])
    with pytest.raises(DatasetError, match="no such"):
        load_dataset(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no videos"):
        load_dataset(str(tmp_path / "empty"))


def make_grouped(tmp_path, n_groups=10, per_group=4):
    rows = ["clip,label,group"]
    for g in range(n_groups):
        for j in range(per_group):
            cls = "alert" if j % 2 else "normal"
            name = f"g{g}_{j}"
            touch(str(tmp_path / cls / f"{name}.mp4"))
            rows.append(f"{name},{cls},g{g}")
    (tmp_path / "groups.csv").write_text("\n".join(rows) + "\n")
    return load_dataset(str(tmp_path))


def test_group_kfold_never_splits_a_group(tmp_path):
    data = make_grouped(tmp_path)
    folds = group_kfold(data, 5, seed=3)
    seen = []
    for tr, va in folds:
        tr_groups = {data.samples[i].group for i in tr}
        va_groups = {data.samples[i].group for i in va}
        assert not tr_groups & va_groups
        assert len(tr) + len(va) == len(data)
        seen += list(va)
    assert sorted(seen) == list(range(len(data)))  # every clip validated exactly once
    assert all(len(va) == 8 for _, va in folds)    # 10 equal groups -> 2 groups per fold
    tr, va = group_split(data, 0.2, seed=1)
    assert not {data.samples[i].group for i in tr} & {data.samples[i].group for i in va}


def test_roc_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert roc_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75
    # a tie counts one half: 1 pair, tied -> 0.5
    assert roc_auc(np.array([1, 0]), np.array([0.3, 0.3])) == 0.5
    assert roc_auc(np.array([1, 1]), np.array([0.3, 0.2])) is None


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.2, 0.9, 0.8, 0.3, 0.7])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["normal", "alert"])
    # predictions at 0.5: 0,1,0,1,1,0,1 -> TP=3, FP=1, FN=1, TN=2
    assert m["confusion_matrix"] == [[2, 1], [1, 3]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)
    # AUC: 12 pairs; negatives 0.1, 0.6, 0.2 vs positives 0.9, 0.8, 0.3, 0.7 -> 11 of 12 ordered right
    assert m["roc_auc"] == pytest.approx(11 / 12)


def test_summarize_folds():
    s = summarize_folds([{"accuracy": 0.5}, {"accuracy": 1.0}])
    assert s["accuracy"]["mean"] == 0.75 and s["accuracy"]["std"] == 0.25
