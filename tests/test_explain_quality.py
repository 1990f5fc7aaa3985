"""Do the explanations of a trained model point at the planted anomaly? Checks against ground truth.

A small tiny-backbone CRNN is trained end to end for a few seconds on synthetic clips whose
anomalous object has a known box in every frame and a known onset (``xvad.synthetic``). Its
explanations must then find the object (pointing game, energy in the box against the box's area
share), rank the anomalous frames above the ones before the onset, pass the model-randomisation
sanity check and beat a random order in deletion / insertion.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xvad.explain import explain, faithfulness, localisation, sanity_check
from xvad.models import CRNN
from xvad.synthetic import make_clip

SIZE, FRAMES = 48, 8
CAM_METHODS = ("gradcam", "gradcam++", "layercam")
GRADIENT_METHODS = {"saliency": {}, "smoothgrad": {"n_samples": 4}, "integrated_gradients": {"steps": 8},
                    "guided_backprop": {}, "guided_gradcam": {}}


def to_input(clips, model: CRNN) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(model.config["mean"]).view(1, 1, 3, 1, 1)
    std = torch.tensor(model.config["std"]).view(1, 1, 3, 1, 1)
    x = torch.from_numpy(np.stack([c.frames for c in clips])).permute(0, 1, 4, 2, 3).float() / 255
    return (x - mean) / std, torch.tensor([c.label for c in clips])


def train_model(seed: int = 0, n_train: int = 128, epochs: int = 3, lr: float = 3e-3) -> dict:
    """A tiny CRNN trained for 3 epochs on 128 synthetic clips (about 10 s on 2 cores)."""
    torch.set_num_threads(2)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = [make_clip(rng, FRAMES, SIZE, anomaly=bool(i % 2)) for i in range(n_train)]
    held_out = [make_clip(rng, FRAMES, SIZE, anomaly=bool(i % 2)) for i in range(16)]
    model = CRNN("tiny", size=SIZE, frames=FRAMES, hidden=32, pooling="avg", dropout=0.0,
                 freeze_backbone=False, precision="fp32")
    x, y = to_input(train, model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 16):
            idx = order[i:i + 16]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    xt, yt = to_input(held_out, model)
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).float().mean())
    anomalous = [i for i, c in enumerate(held_out) if c.label == 1]
    return {"model": model, "x": xt[anomalous], "clips": [held_out[i] for i in anomalous], "accuracy": accuracy}


@pytest.fixture(scope="module")
def trained() -> dict:
    return train_model()


def test_model_learned_the_task(trained):
    assert trained["accuracy"] >= 0.85


@pytest.mark.parametrize("method,options", [
    ("gradcam", {"pooling": "clip"}), ("gradcam++", {}), ("gradcam++", {"pooling": "clip"}), ("layercam", {}),
])
def test_cam_points_inside_the_box(trained, method, options):
    e = explain(trained["model"], trained["x"], method, target=1, **options)
    report = localisation(e.maps, [c.boxes for c in trained["clips"]])
    print(method, options, report)
    assert report["frames"] > 30
    assert report["pointing_game"] >= 0.9
    assert report["energy_in_box"] > 4 * report["box_area_share"]


def test_per_frame_gradcam_points_inside_the_box_where_it_points(trained):
    """Per-frame Grad-CAM ("frame" pooling) points right on the frames that count for the decision
    (here about a third of the anomalous frames, the later ones: the GRU decides from them). On the
    others the map is faint (< 10% of the clip's peak) and its maximum is noise: over all frames it
    scored 0.5 to 1.0 across training seeds, so that number is printed, not asserted. Clip pooling
    (weights from the frames that count, applied to all) has no such gap: see the test above."""
    e = explain(trained["model"], trained["x"], "gradcam", target=1)
    boxes = [c.boxes for c in trained["clips"]]
    everywhere, relevant = localisation(e.maps, boxes), localisation(e.maps, boxes, min_peak=0.1)
    print("gradcam, all anomalous frames", everywhere)
    print("gradcam, frames with peak >= 10% of the clip's", relevant)
    assert relevant["frames"] >= len(trained["clips"])  # at least one frame per clip on average
    assert relevant["pointing_game"] >= 0.9
    assert everywhere["energy_in_box"] > 4 * everywhere["box_area_share"]


def test_gradient_methods_localisation_report(trained):
    """Computed and printed for the record; asserted only loosely (better than a blind map)."""
    for method, options in GRADIENT_METHODS.items():
        e = explain(trained["model"], trained["x"], method, target=1, **options)
        report = localisation(e.maps, [c.boxes for c in trained["clips"]])
        print(method, {k: round(v, 3) for k, v in report.items()})
        assert report["energy_in_box"] > report["box_area_share"], method


def onset_wins(importance: np.ndarray, clips) -> float:
    """Share of clips whose mean importance over anomalous frames beats that over earlier frames."""
    return float(np.mean([importance[k, c.onset:].mean() > importance[k, :c.onset].mean()
                          for k, c in enumerate(clips)]))


@pytest.mark.parametrize("method", ["gradcam", "saliency", "occlusion"])
def test_frame_importance_is_higher_after_onset(trained, method):
    e = explain(trained["model"], trained["x"], method, target=1)
    wins = onset_wins(e.frame_importance, trained["clips"])
    print(method, "onset wins", wins)
    assert wins >= 0.8


def test_sanity_check_correlations_fall(trained):
    result = sanity_check(trained["model"], trained["x"][:3], methods=("gradcam", "saliency"), target=1)
    print()
    print(result["table"])
    stages = result["stages"]
    assert stages[:2] == ["head", "gru"] and len(stages) == 5  # then the tiny backbone's three convs
    gradcam, saliency = result["spearman"]["gradcam"], result["spearman"]["saliency"]
    # Everything random: Grad-CAM's ranking of voxels has little left of the trained one.
    assert abs(gradcam[-1]) < 0.5
    # Saliency keeps part of its correlation (it also sees the input's edges, the known weakness
    # Adebayo et al. report) but must still fall as the layers go.
    assert saliency[-1] < saliency[0] - 0.1
    assert saliency[-1] < 0.9


def test_deletion_and_insertion_beat_random_order(trained):
    results = [faithfulness(trained["model"], trained["x"][i], method="gradcam", target=1, n_steps=12)
               for i in range(2)]
    for r in results:
        print(r)
    mean = {k: np.mean([getattr(r, k) for r in results]) for k in (
        "deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random",
        "temporal_deletion_auc", "temporal_deletion_auc_random")}
    assert mean["deletion_auc"] < mean["deletion_auc_random"] - 0.1
    assert mean["insertion_auc"] > mean["insertion_auc_random"]
    assert mean["temporal_deletion_auc"] < mean["temporal_deletion_auc_random"]
    curve = results[0].curves["deletion"][1]
    assert curve[0] == pytest.approx(results[0].score, abs=1e-6)
