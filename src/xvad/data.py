"""Datasets of labelled videos: a folder per class or a CSV, with group-wise splits.

Clips cut from one source video share a ``group``; every split keeps a group on one side, so
scenes never leak between training and validation.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".ts", ".flv", ".wmv"}
_NORMAL_NAME = re.compile(r"^(normal|neutral|negative|neg|background|none|no[_\- ]?|non[_\- ]?)", re.I)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int
    group: str


@dataclass
class Dataset:
    samples: list[Sample]
    classes: list[str]
    root: str

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples])

    def subset(self, idx) -> Dataset:
        return Dataset([self.samples[i] for i in idx], self.classes, self.root)


def order_classes(names: list[str], classes: list[str] | None = None) -> list[str]:
    """Explicit order if given; else "normal-like" names (normal, noFight, non_violent...) first.

    For two classes this makes index 1 the alert class, which binary scores refer to.
    """
    names = sorted(set(names))
    if classes:
        missing = sorted(set(names) - set(classes))
        if missing:
            raise DatasetError(f"labels {missing} are not in the given classes {classes}")
        return list(classes)
    return sorted(names, key=lambda n: (not _NORMAL_NAME.match(n), n.lower()))


def _read_groups(path: str) -> dict[str, str]:
    """``groups.csv`` (clip,label,group) -> {clip name or stem: group}."""
    groups: dict[str, str] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("clip") or not row.get("group"):
                raise DatasetError(f"{path}: needs the columns clip,label,group")
            groups[row["clip"].strip()] = row["group"].strip()
    return groups


def _group_of(path: str, groups: dict[str, str], root: str) -> str:
    name = os.path.basename(path)
    rel = os.path.relpath(path, root)
    for key in (rel, name, os.path.splitext(name)[0], os.path.splitext(rel)[0]):
        if key in groups:
            return groups[key]
    return rel  # no group given: the clip is its own group


def load_dataset(source: str, classes: list[str] | None = None) -> Dataset:
    """Read ``DATA/<class>/*.mp4`` or a CSV of ``path,label[,group]`` (paths relative to the CSV)."""
    if not os.path.exists(source):
        raise DatasetError(f"{source}: no such dataset folder or CSV file")
    if os.path.isdir(source):
        root = source
        groups_path = os.path.join(root, "groups.csv")
        groups = _read_groups(groups_path) if os.path.isfile(groups_path) else {}
        items = []
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if not os.path.isdir(folder) or name.startswith("."):
                continue
            for fname in sorted(os.listdir(folder)):
                if os.path.splitext(fname)[1].lower() in VIDEO_EXTENSIONS:
                    path = os.path.join(folder, fname)
                    items.append((path, name, _group_of(path, groups, root)))
    else:
        root = os.path.dirname(os.path.abspath(source))
        items = []
        with open(source, newline="") as f:
            for i, row in enumerate(csv.reader(f)):
                if not row or row[0].startswith("#") or (i == 0 and row[0].strip().lower() == "path"):
                    continue
                if len(row) < 2:
                    raise DatasetError(f"{source}: line {i + 1}: expected path,label[,group]")
                path = row[0].strip()
                path = path if os.path.isabs(path) else os.path.join(root, path)
                group = row[2].strip() if len(row) > 2 and row[2].strip() else os.path.relpath(path, root)
                items.append((path, row[1].strip(), group))
    if not items:
        raise DatasetError(f"{source}: no videos found (expected DATA/<class>/*.mp4 or a CSV path,label[,group])")
    ordered = order_classes([label for _, label, _ in items], classes)
    if len(ordered) < 2:
        raise DatasetError(f"{source}: found only one class ({ordered[0]}); a classifier needs two or more")
    index = {c: i for i, c in enumerate(ordered)}
    return Dataset([Sample(p, index[label], g) for p, label, g in items], ordered, root)


def group_kfold(data: Dataset, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group-wise k folds, balanced for size and classes: (train indices, validation indices) each.

    Groups are shuffled, then each goes to the fold with the fewest clips of its majority class.
    """
    groups = sorted({s.group for s in data.samples})
    if len(groups) < k:
        raise DatasetError(f"{data.root}: {len(groups)} groups cannot make {k} group-wise folds "
                           f"(--folds: at most {len(groups)}, or 0 for one hold-out split)")
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    members = {g: [i for i, s in enumerate(data.samples) if s.group == g] for g in groups}
    groups.sort(key=lambda g: -len(members[g]))  # big groups first, then fill in (stable: shuffled ties)
    counts = np.zeros((k, len(data.classes)))
    fold_of = {}
    for g in groups:
        per_class = np.bincount([data.samples[i].label for i in members[g]], minlength=len(data.classes))
        cost = ((counts + per_class) ** 2).sum(1)  # keep every fold's class counts level
        f = int(np.argmin(cost))
        counts[f] += per_class
        fold_of[g] = f
    folds = np.array([fold_of[s.group] for s in data.samples])
    idx = np.arange(len(data))
    return [(idx[folds != f], idx[folds == f]) for f in range(k)]


def group_split(data: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One group-wise train/validation split holding out about ``val_fraction`` of the clips."""
    n_groups = len({s.group for s in data.samples})
    if n_groups < 2:
        raise DatasetError(f"{data.root}: a group-wise split needs at least two groups, found {n_groups}")
    k = max(2, min(int(round(1 / val_fraction)), n_groups))
    return group_kfold(data, k, seed)[0]
