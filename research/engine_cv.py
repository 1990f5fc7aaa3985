"""Does scoring in fp32 change the shipped recipe's out-of-fold results? (The service's default engine,
OpenVINO, scores fp32 features; the shipped heads were trained on bf16 ones.)

Group 5-fold cross-validation on surv-fight exactly as ``xvad train`` runs it with its defaults (the
shipped recipe: bf16 training features, epochs chosen on an inner group split), for each fold seed;
each fold's held-out clips are then scored as a stream twice by the same fold heads: on bf16 features
(as trained) and on fp32 features computed by OpenVINO. Prints accuracy and ROC-AUC of both per seed.

With ``--train fp32`` the training features are fp32 too (OpenVINO): the recipe retrained for the
engine, scored the same two ways.

Usage: python research/engine_cv.py DATA [--seeds 0,1,2] [--cache DIR] [--train bf16|fp32]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from xvad.config import TrainConfig
from xvad.data import group_kfold, load_dataset
from xvad.features import stream_features
from xvad.metrics import classification_metrics
from xvad.models import CRNN
from xvad.train import choose_epochs, fit, prepare_inputs, stream_proba


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cache", default=None, help="feature cache folder (default: xvad's)")
    ap.add_argument("--train", default="bf16", choices=["bf16", "fp32"], help="precision of the training features")
    a = ap.parse_args()
    out = {}
    for seed in [int(s) for s in a.seeds.split(",")]:
        cfg = TrainConfig(seed=seed, cache_dir=a.cache, precision=a.train)
        data = load_dataset(a.data, cfg.classes)
        model = CRNN.from_config(cfg, len(data.classes), data.classes)
        if a.train == "fp32":
            model.set_engine("openvino")
        inputs, failures = prepare_inputs(model, data, cfg, progress=False)
        assert not failures, failures
        paths = [s.path for s in data.samples]
        bf16_model = CRNN.from_config(cfg, len(data.classes), data.classes).set_precision("bf16")
        bf16, _ = stream_features(bf16_model, paths, cfg.stream_fps, cfg.cache_dir, progress=False)
        fp32_model = CRNN.from_config(cfg, len(data.classes), data.classes).set_precision("fp32")
        fp32_model.load_state_dict(model.state_dict())
        fp32_model.set_engine("openvino")
        fp32, _ = stream_features(fp32_model, paths, cfg.stream_fps, cfg.cache_dir, progress=False)
        labels = data.labels
        n_views = max(cfg.augment, 1)

        def views_of(idx, inputs=inputs, n_views=n_views) -> list[tuple[int, int]]:
            return [(int(i), v) for i in idx for v in range(n_views) if (int(i), v) in inputs]

        rows = {"bf16": [], "fp32": []}
        index: list[int] = []
        for f, (tr, va) in enumerate(group_kfold(data, cfg.folds, cfg.seed)):
            name = f"seed {seed} fold {f + 1}"
            sel = choose_epochs(model, inputs, data, tr, views_of, cfg, cfg.seed + f, name, False, None)
            fit(model, inputs, views_of(tr), [], labels, cfg, sel["best_epoch"], cfg.seed + f, name, False, None)
            held = [int(i) for i in va]
            index += held
            rows["bf16"].append(stream_proba(model, [bf16[i] for i in held]).numpy())
            rows["fp32"].append(stream_proba(model, [fp32[i] for i in held]).numpy())
        y = labels[index]
        out[seed] = {}
        for k, parts in rows.items():
            m = classification_metrics(y, np.concatenate(parts), data.classes)
            out[seed][k] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"]}
        flips = int(((np.concatenate(rows["bf16"])[:, 1] >= 0.5) != (np.concatenate(rows["fp32"])[:, 1] >= 0.5)).sum())
        out[seed]["decisions_changed"] = flips
        print(f"seed {seed}, trained on {a.train} features: scored on bf16 features acc "
              f"{out[seed]['bf16']['accuracy']:.3f} "
              f"ROC-AUC {out[seed]['bf16']['roc_auc']:.3f}; on fp32 (OpenVINO) acc {out[seed]['fp32']['accuracy']:.3f} "
              f"ROC-AUC {out[seed]['fp32']['roc_auc']:.3f}; {flips} of {len(y)} decisions changed", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
