"""One declaration of the settings: every field is a train option, a checkpoint entry and a CRNN argument;
the defaults are the shipped recipe and --preset paper the paper's layout."""
from dataclasses import asdict, fields

import pytest
import torch

import xvad
from xvad.checkpoint import load_model, save_model
from xvad.cli import build_parser
from xvad.config import ModelConfig, TrainConfig, from_args
from xvad.models import CRNN
from xvad.models.backbones import BACKBONES
from xvad.models.crnn import POOLINGS, TEMPORALS
from xvad.models.precision import PRECISIONS
from xvad.video import CROPS


def train_options() -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {o: a for a in sub.choices["train"]._actions for o in a.option_strings}


def parse_train(*options: str) -> TrainConfig:
    return from_args(TrainConfig, build_parser().parse_args(["train", "DATA", "--out", "RUN", *options]))


def test_every_setting_is_a_train_option_with_the_registrys_choices():
    options = train_options()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in options, f"{f.name} is not an option of xvad train"
        assert options[flag].dest == f.name and f.metadata["help"] in options[flag].help
    registries = {"backbone": BACKBONES, "pooling": POOLINGS, "temporal": TEMPORALS, "precision": PRECISIONS,
                  "crop": CROPS}
    for name, registry in registries.items():
        assert list(options["--" + name].choices) == list(registry)


def test_every_model_setting_is_accepted_by_crnn_and_recorded_in_its_checkpoint(tmp_path):
    # non-default values for a tiny model, so that a setting dropped on the way would show
    changed = dict(backbone="tiny", weights=None, frames=5, size=40, fps=6.0, crop="pad", pooling="avg",
                   input="motion", temporal="gru", hidden=24, layers=2, bidirectional=True, dropout=0.1,
                   norm_eps=0.01, norm_clamp=2.5, precision="fp32")
    cfg = ModelConfig(**{f.name: changed.get(f.name, f.default) for f in fields(ModelConfig)})
    torch.manual_seed(0)
    model = CRNN.from_config(cfg, num_classes=3, classes=["normal", "fight", "fall"]).eval()
    assert model.gru.num_layers == 2 and model.gru.bidirectional and model.gru.hidden_size == 24
    path = save_model(model, str(tmp_path / "m.pt"))
    saved = torch.load(path, weights_only=True)["config"]
    for f in fields(ModelConfig):
        assert f.name in saved, f"{f.name} is not recorded in a checkpoint"
        expected = "none" if f.name == "weights" else getattr(cfg, f.name)   # weights: recorded by id
        assert saved[f.name] == expected, f.name
    loaded = load_model(path)
    assert loaded.settings == ModelConfig(**{**asdict(cfg), "weights": "none"})
    x = torch.randn(2, 5, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert CRNN(**cfg.kwargs()).config == {**model.config, "classes": ["normal", "alert"], "num_classes": 2}


def test_a_checkpoint_without_a_newer_setting_loads_with_the_old_behaviour(tmp_path):
    """Checkpoints written before norm_eps and norm_clamp existed: batch norm's own floor, no clamp."""
    path = save_model(CRNN("tiny", size=32, frames=4, temporal="pool", precision="fp32"), str(tmp_path / "m.pt"))
    payload = torch.load(path, weights_only=True)
    for key in ("norm_eps", "norm_clamp"):
        del payload["config"][key]
    payload["config"]["recorded_elsewhere"] = "kept"
    torch.save(payload, tmp_path / "old.pt")
    m = load_model(str(tmp_path / "old.pt"))
    assert m.head[0].eps == 1e-5 and m.head[0].bound is None
    assert m.config["recorded_elsewhere"] == "kept"


def test_defaults_are_the_shipped_recipe():
    """The shipped checkpoint records the settings it was trained with: the defaults equal every one."""
    shipped = xvad.load_model().extra["train_config"]
    defaults = asdict(TrainConfig())
    assert set(shipped) <= set(defaults)
    assert {k: defaults[k] for k in shipped} == shipped
    assert parse_train() == TrainConfig()


def test_paper_preset_is_the_old_layout_and_explicit_options_override_it():
    paper = dict(backbone="vgg19", weights="imagenet", frames=16, size=224, fps=None, crop="center", shrink="first",
                 flow="medium", pooling="avg", input="rgb", temporal="gru", hidden=256, layers=1, bidirectional=False,
                 dropout=0.3, norm_eps=1e-5, norm_clamp=None, precision="auto", epochs=60, batch_size=16,
                 lr=1e-3, weight_decay=1e-3, patience=10, seed=0, folds=0, val_fraction=0.2, inner_folds=1,
                 augment=1, finetune=False, backbone_lr=1e-5, cache_dir=None, stream_fps=None, classes=None)
    assert asdict(parse_train("--preset", "paper")) == paper
    assert asdict(TrainConfig.preset("paper")) == paper
    # the order on the command line does not matter: the preset first, then the explicit options
    for options in (["--preset", "paper", "--hidden", "128"], ["--hidden", "128", "--preset", "paper"]):
        assert asdict(parse_train(*options)) == {**paper, "hidden": 128}
    cfg = parse_train("--preset", "paper", "--backbone", "efficientnet_lite0", "--folds", "5", "--weights", "none",
                      "--fps", "8", "--classes", "noFight,fight", "--bidirectional", "--input", "motion+flow")
    assert asdict(cfg) == {**paper, "backbone": "efficientnet_lite0", "folds": 5, "weights": None, "fps": 8.0,
                           "classes": ["noFight", "fight"], "bidirectional": True, "input": "motion+flow"}
    assert parse_train("--no-finetune", "--norm-clamp", "none").norm_clamp is None


@pytest.mark.parametrize("options, message", [(["--input", "depth"], "input must be one of"),
                                              (["--backbone", "resnet"], "invalid choice"),
                                              (["--preset", "fast"], "invalid choice")])
def test_bad_train_options_name_the_option(options, message, capsys):
    with pytest.raises(SystemExit):
        parse_train(*options)
    err = capsys.readouterr().err
    assert options[0] in err and message in err
