"""The package's one JSON cleaner and writer and its one file hasher, against hand-made references."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from xvad.checkpoint import file_id
from xvad.features import content_hash
from xvad.hashing import file_sha256
from xvad.jsonio import dumps, json_safe, write_json
from xvad.stream.events import EventLog


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path = tmp_path / "blob.bin"
    path.write_bytes(data)                          # more than one 1 MiB chunk
    want = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == want
    assert content_hash(str(path)) == want          # the feature-cache key's part
    assert file_id(str(path)) == want[:12]          # the checkpoint id


def test_json_safe_cleans_numpy_tensors_paths_and_non_finite(tmp_path):
    class Thing:
        def to_dict(self):
            return {"x": np.float32(1.5)}

    payload = {"f32": np.float32(0.25), "i64": np.int64(7), "b": np.bool_(False), "inf": math.inf,
               "arr": np.arange(4).reshape(2, 2), "t": torch.tensor([1.0, float("nan")]),
               "scalar": torch.tensor(3), "p": tmp_path / "a.txt", "tuple": (1, 2.0), "set": {5},
               3: "int key", "thing": Thing(), "type": int}
    want = {"f32": 0.25, "i64": 7, "b": False, "inf": None, "arr": [[0, 1], [2, 3]], "t": [1.0, None],
            "scalar": 3, "p": str(tmp_path / "a.txt"), "tuple": [1, 2.0], "set": [5], "3": "int key",
            "thing": {"x": 1.5}, "type": str(int)}
    assert json_safe(payload) == want
    path = write_json(tmp_path / "x.json", payload)
    assert json.loads(open(path).read()) == want
    assert json.loads(dumps(want)) == want
    # lists of numbers and of points stay on one line
    assert dumps({"poly": [[1.0, 2.0], [3.0, 4.0]]}) == '{\n  "poly": [[1.0, 2.0], [3.0, 4.0]]\n}'


def test_event_lines_use_the_same_cleaner(tmp_path):
    with EventLog(tmp_path / "ev.jsonl", checkpoint="abc") as log:
        log.write("window", score=np.float32(0.5), frames=np.arange(3), bad=float("nan"))
    (line,) = (tmp_path / "ev.jsonl").read_text().splitlines()
    rec = json.loads(line)
    assert rec["score"] == 0.5 and rec["frames"] == [0, 1, 2] and rec["bad"] is None
    assert rec["type"] == "window" and rec["checkpoint"] == "abc" and " " not in line.split('"wall"')[0]
