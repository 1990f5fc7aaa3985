"""``xvad adapt --camera NAME``: adapt one camera of the service from its reviewers' verdicts.

A confirmed alert is a fight at that camera, a dismissed one a false alarm (escalated alerts and
alerts without a clip are left out). The verdicts are put in time order: a candidate adapted on the
earlier two thirds (plus any labelled clips given) is scored against the camera's current model on
the later third, each at its own threshold. Only a candidate with the higher accuracy there is
kept: the same adaptation is then run on every verdict and adopted as the camera's next model
version (audited; ``xvad models rollback`` undoes it). Otherwise nothing changes but the audit log.
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..models import CRNN
from .base import base_for
from .core import SHARE, adapt, clip_scores, summarise
from .offline import save_adapted, site_clips

log = logging.getLogger(__name__)
LABELS = {"confirmed": 1, "dismissed": 0}
MIN_VERDICTS = 6            # at least 4 to learn from and 2 to judge by
HELD_OUT = 1 / 3            # the later share of the verdicts that judges


@dataclass
class Example:
    """One labelled clip of the camera: where it is, its label, and when (alerts: their start)."""

    path: str
    label: int
    when: str
    alert_id: int | None = None


def verdict_examples(db, media_root: str, camera: str) -> list[Example]:
    """The camera's alerts whose current verdict is confirmed or dismissed and whose clip is on disk,
    oldest first."""
    from ..service.media import media_path

    out = []
    for review, label in LABELS.items():
        offset = 0
        while True:
            page, total = db.alerts(cameras=[camera], review=review, limit=500, offset=offset)
            for alert in page:
                path = media_path(media_root, alert, "clip")
                if path is not None:
                    out.append(Example(path, label, alert["started_at"], alert["id"]))
            offset += len(page)
            if not page or offset >= total:
                break
    return sorted(out, key=lambda e: (e.when, e.alert_id or 0))


def actor() -> str:
    """Who a command-line change is recorded as."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def judge(current: CRNN, current_threshold: float, candidate, clips: list[torch.Tensor],
          labels: np.ndarray) -> dict:
    """The current model and the candidate on the held-out clips, each at its own threshold."""
    now = summarise(clip_scores(current, clips), labels, current_threshold)
    new = summarise(clip_scores(candidate.model, clips), labels, candidate.threshold)
    return {"current": now, "candidate": new, "better": bool(new["accuracy"] > now["accuracy"])}


def run_camera(a: argparse.Namespace) -> tuple[int, list[str]]:
    """The ``--camera`` form of ``xvad adapt``: its exit status (0 when a new version was adopted, 1
    when the current model was kept) and the lines to print."""
    from ..checkpoint import load_model
    from ..service import versions
    from ..service.cli import open_database, state_settings

    settings = state_settings(a)
    data_dir = str(settings.data) if settings is not None else a.data
    if not data_dir:
        raise ConfigError("--camera: the service's media are needed: give --config FILE or --data DIR")
    camera = settings.camera(a.camera) if settings is not None else None
    db = open_database(a)
    active = versions.active_version(db, a.camera)
    path = (os.path.join(data_dir, active["path"]) if active else
            a.checkpoint or (camera.model if camera is not None else None))
    current = load_model(None if path is None else str(path))
    in_force = (camera.threshold if camera is not None and camera.threshold is not None
                else float(current.extra.get("threshold", 0.5)))
    examples = verdict_examples(db, os.path.join(data_dir, "media"), a.camera)
    if len(examples) < MIN_VERDICTS:
        raise DatasetError(f"--camera {a.camera}: {len(examples)} reviewed alert(s) with a clip (confirmed or "
                           f"dismissed); adaptation needs at least {MIN_VERDICTS}")
    base = base_for(current, a.base)
    clips, failures = site_clips(current, [e.path for e in examples], progress=False)
    usable = [(e, c) for e, c in zip(examples, clips) if c is not None]
    extra_clips, extra_labels = labelled_extra(current, a.site)
    cut = len(usable) - max(2, int(round(len(usable) * HELD_OUT)))
    early, late = usable[:cut], usable[cut:]
    labels = np.array([e.label for e, _ in usable])
    train_clips = [c for _, c in early] + extra_clips
    train_labels = np.r_[labels[:cut], extra_labels].astype(int)
    candidate = adapt(current, base, train_clips, train_labels, share=a.share, seed=a.seed,
                      default_threshold=in_force)
    verdict = judge(current, in_force, candidate, [c for _, c in late], labels[cut:])
    metrics = {"verdicts": len(usable), "trained_on": len(early), "extra_clips": len(extra_clips),
               "judged_on": len(late), "judged_from": late[0][0].when, **verdict,
               "skipped": sorted(failures.values())}
    lines = [f"{a.camera}: {len(usable)} reviewed alerts ({int(labels.sum())} confirmed); trained on the "
             f"{len(early)} earlier, judged on the {len(late)} later (from {late[0][0].when})",
             f"  current model: accuracy {verdict['current']['accuracy']:.3f} at threshold {in_force:.3f}",
             f"  candidate:     accuracy {verdict['candidate']['accuracy']:.3f} at threshold {candidate.threshold:.3f}"]
    if not verdict["better"]:
        if not a.dry_run:
            versions.reject(db, a.camera, actor=actor(), metrics=metrics)
        lines.append(f"{a.camera}: kept the current model (the candidate did not beat it on the later verdicts)")
        return 1, lines
    final = adapt(current, base, [c for _, c in usable] + extra_clips, np.r_[labels, extra_labels].astype(int),
                  share=a.share, seed=a.seed, default_threshold=in_force)
    metrics["final"] = final.report
    if a.dry_run:
        lines.append(f"{a.camera}: the candidate is better; --dry-run: nothing adopted")
        return 0, lines
    with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
        file = save_adapted(final, current, os.path.join(tmp, "model.pt"), f"camera {a.camera} verdicts")
        version = versions.adopt(db, data_dir, a.camera, file, actor=actor(), metrics=metrics,
                                 note=f"adapted on {len(usable)} verdicts")
    lines.append(f"{a.camera}: adopted model version {version} (threshold {final.threshold:.3f}); the service switches "
          f"to it within seconds; undo with `xvad models rollback {a.camera}`")
    if camera is not None and camera.threshold is not None:
        lines.append(f"  note: the configured threshold {camera.threshold} overrides the adapted model's")
    return 0, lines


def labelled_extra(model: CRNN, source: str | None) -> tuple[list[torch.Tensor], np.ndarray]:
    """Other labelled clips of the camera (SITE_DATA), always on the learning side."""
    if not source:
        return [], np.zeros(0, int)
    from ..data import load_dataset

    data = load_dataset(source, model.classes)
    clips, failures = site_clips(model, [s.path for s in data.samples], progress=False)
    for path, error in failures.items():
        log.warning("%s: left out (%s)", path, error)
    keep = [i for i, c in enumerate(clips) if c is not None]
    return [c for c in clips if c is not None], data.labels[keep]


__all__ = ["SHARE", "Example", "run_camera", "verdict_examples"]
