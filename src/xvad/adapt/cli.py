"""``xvad adapt``: a model adapted to one site, from a folder of its labelled clips (offline) or from a
camera's reviewed alerts in the service (``--camera``); ``--build-base`` makes the base features a
checkpoint needs for either."""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "adapt", help="adapt a model to one camera or site from a few labelled clips",
        description="Retrains the model's heads on its base clips plus the site's, the site's clips weighted "
                    "to half the loss, and chooses the site's own threshold on out-of-fold scores. "
                    "Offline: xvad adapt SITE_DATA --out RUN. In the service: xvad adapt --camera NAME "
                    "--config FILE (from the camera's reviewed alerts; kept only if it beats the camera's "
                    "current model on its later verdicts).")
    p.add_argument("site", nargs="?", metavar="SITE_DATA",
                   help="labelled clips of the site: a folder per class or a CSV, as `xvad train` takes")
    p.add_argument("--out", metavar="RUN", help="offline: the run folder (model.pt, adapt.json)")
    p.add_argument("--checkpoint", default=None, help="the model to adapt (default: the shipped model; with "
                                                      "--camera: the camera's current model)")
    p.add_argument("--base", metavar="FILE", default=None,
                   help="the base features (default: the file beside the checkpoint, or the shipped model's)")
    p.add_argument("--share", type=float, default=0.5,
                   help="the site's share of the training loss, between 0 and 1 (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build-base", metavar="DATA", default=None,
                   help="instead: write the base features of --checkpoint for its training data DATA "
                        "(beside the checkpoint, or to --out FILE)")
    p.add_argument("--camera", metavar="NAME", help="adapt this camera of the service from its verdicts")
    p.add_argument("--dry-run", action="store_true", help="with --camera: measure, but adopt nothing")
    from ..service.cli import add_state_options
    add_state_options(p)


def run(a: argparse.Namespace) -> int:
    from ..checkpoint import load_model

    if not 0.0 <= a.share < 1.0:
        raise ConfigError(f"--share: must be at least 0 and below 1, not {a.share}")
    if a.build_base:
        return build(a)
    if a.camera:
        from .camera import run_camera
        code, lines = run_camera(a)
        for line in lines:
            print(line)
        return code
    if not a.site or not a.out:
        raise ConfigError("xvad adapt: give SITE_DATA and --out RUN (offline), or --camera NAME with the "
                          "service's --config FILE")
    from .base import base_for
    from .offline import adapt_folder, describe

    model = load_model(a.checkpoint)
    report = adapt_folder(model, base_for(model, a.base), a.site, a.out, share=a.share, seed=a.seed)
    for line in describe(report):
        print(line)
    print(f"wrote {report['checkpoint']} and {os.path.join(a.out, 'adapt.json')}")
    return 0


def build(a: argparse.Namespace) -> int:
    main_build_base(a.checkpoint, a.build_base, a.out, a.seed)
    return 0


def main_build_base(checkpoint: str | None, data: str, out: str | None = None, seed: int = 0) -> str:
    """Write the base features of ``checkpoint`` for its training set ``data`` (beside it, or ``out``),
    with the heads' epoch count chosen by inner group 3-fold CV on them."""
    from ..checkpoint import load_model
    from .base import base_path, build_base, save_base
    from .core import choose_base_epochs

    model = load_model(checkpoint)
    base = build_base(model, data, epochs=0)
    base.epochs = choose_base_epochs(model, base, seed=seed)
    path = save_base(base, out or base_path(model.checkpoint_path))
    print(f"wrote {path}: {len(base.labels)} clips, heads train for {base.epochs} epochs "
          f"({os.path.getsize(path) / 1e6:.1f} MB)")
    return path
