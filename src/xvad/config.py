"""The settings of a model and of its training, declared once.

Every field carries its default, its help text and, where a registry holds the allowed values, a
function returning them (``metadata["choices"]``). The ``xvad train`` options
(:func:`add_dataclass_arguments`, :func:`from_args`), the config a checkpoint records and the
:class:`~xvad.models.CRNN` keyword arguments all come from these declarations, so a new setting is
one field here plus the code that uses it.

The defaults are the recipe of the shipped fight detector: EfficientNet-Lite0 at 192 px on frame
differences and optical flow (made from frames shrunk to that size first), max-pooled, mean and max
over time with a linear head per stream, three views per training clip, group 5-fold cross-validation.
``PRESETS["paper"]`` is the paper's layout: VGG19 on every frame, a GRU, an MLP on its last state.
"""
from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, Callable, TypeVar

C = TypeVar("C", bound="ModelConfig")


def setting(default: Any, help: str, *, choices: Callable[[], typing.Sequence[str]] | None = None,
            parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A config field: its default, help text, and optionally the registry function giving its
    choices, a parser for its command-line value and the metavar shown in ``--help``."""
    return field(default=default, metadata={"help": help, "choices": choices, "parse": parse, "metavar": metavar})


# -- registries (imported when asked, so that this module imports nothing heavy) ----------------
def backbones() -> tuple[str, ...]:
    from .models.backbones import BACKBONES
    return BACKBONES


def poolings() -> tuple[str, ...]:
    from .models.crnn import POOLINGS
    return POOLINGS


def temporals() -> tuple[str, ...]:
    from .models.crnn import TEMPORALS
    return TEMPORALS


def precisions() -> tuple[str, ...]:
    from .models.precision import PRECISIONS
    return PRECISIONS


def engines() -> tuple[str, ...]:
    from .models.engine import ENGINES
    return ENGINES


def crops() -> tuple[str, ...]:
    from .video import CROPS
    return CROPS


def inputs() -> tuple[str, ...]:
    from .video import INPUTS
    return INPUTS


def shrinks() -> tuple[str, ...]:
    from .video import SHRINKS
    return SHRINKS


def flows() -> tuple[str, ...]:
    from .video import FLOW_PRESETS
    return tuple(FLOW_PRESETS)


def methods() -> tuple[str, ...]:
    from .explain import METHODS
    return tuple(METHODS)


def check_input(value: str) -> str:
    """A model ``input`` such as "rgb" or "motion+flow"; ValueError names the allowed streams."""
    from .video import input_streams
    input_streams(value)
    return value


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _names(value: str) -> list[str] | None:
    names = [v.strip() for v in value.split(",") if v.strip()]
    return names or None


# -- the declarations ---------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """What a model is and which clips it expects; recorded in its checkpoint."""

    backbone: str = setting("efficientnet_lite0", "the CNN run on every frame", choices=backbones)
    weights: str | None = setting("imagenet", "backbone weights: imagenet (download or bundled), a local "
                                  ".pth file, or none", parse=_weights)
    frames: int = setting(16, "frames per clip")
    size: int = setting(192, "input size in pixels")
    fps: float | None = setting(None, "sample at this rate instead of uniformly over the clip")
    crop: str = setting("motion", "fitting a frame into size x size: a square around what moved in the "
                        "frame's last 16 frames (motion; with --shrink first), the centre crop, the whole frame "
                        "squeezed, or padded", choices=crops)
    shrink: str = setting("first", "when frames are shrunk to the input: first (OpenCV area averaging, then "
                          "motion and flow on the small images: cheap) or last (motion and flow at the frame's "
                          "resolution, then an antialiased resize: the rule of checkpoints saved before this "
                          "setting)", choices=shrinks)
    flow: str = setting("medium", "OpenCV DIS preset of the flow stream's optical flow: fast is about five "
                        "times cheaper than medium, and coarser (medium: the rule of checkpoints saved before "
                        "this setting)", choices=flows)
    pooling: str = setting("max", "over each feature map", choices=poolings)
    input: str = setting("motion+flow", "what the backbone sees: the frames, 4x|difference| with the next "
                         "decoded frame, their optical flow, or several of these joined by + (one stream and "
                         "head each)", parse=check_input, metavar="{rgb,motion,flow}[+...]")
    temporal: str = setting("pool", "over time: the GRU + MLP head, or mean and max pooling + a linear layer",
                            choices=temporals)
    hidden: int = setting(256, "GRU hidden size")
    layers: int = setting(1, "GRU layers")
    bidirectional: bool = setting(False, "a bidirectional GRU")
    dropout: float = setting(0.3, "dropout before the head's layers")
    norm_eps: float = setting(1e-5, "with --temporal pool: variance floor of the head's batch norm (each "
                              "feature is divided by at least its square root)")
    norm_clamp: float | None = setting(None, "with --temporal pool: clamp the standardised features to "
                                       "+-this, so that one feature far outside its training range moves "
                                       "the score by a bounded amount")
    precision: str = setting("auto", "backbone precision (auto: bf16 where the CPU/GPU has it)",
                             choices=precisions)

    def kwargs(self) -> dict[str, Any]:
        """The model settings alone (also of a TrainConfig): ``CRNN(**cfg.kwargs())``."""
        return {f.name: getattr(self, f.name) for f in fields(ModelConfig)}

    def check(self) -> None:
        """ConfigError (a ValueError) for a setting outside its registry's choices, or settings that do
        not go together."""
        from .errors import ConfigError

        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices():
                raise ConfigError(f"{f.name} must be one of {', '.join(choices())}, not {getattr(self, f.name)!r}")
        if self.crop == "motion" and self.shrink != "first":
            raise ConfigError("--crop motion cuts each frame's square before shrinking it: it needs --shrink first")

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        """The defaults with preset ``name`` applied, then ``overrides``."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        own = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in PRESETS[name].items() if k in own}, **overrides})


@dataclass
class TrainConfig(ModelConfig):
    """A model's settings plus how to train and validate it (``xvad train``)."""

    epochs: int = setting(60, "most epochs per training run")
    batch_size: int = setting(16, "clips per batch")
    lr: float = setting(1e-3, "learning rate of the GRU and head")
    weight_decay: float = setting(1e-3, "AdamW weight decay")
    patience: int = setting(10, "early stopping patience in epochs")
    seed: int = setting(0, "seed of the group splits (which clips make each fold) and of the weights")
    folds: int = setting(5, "group k-fold cross-validation (0 or 1: one hold-out split)")
    val_fraction: float = setting(0.2, "share of the groups held out (one hold-out split, inner splits)")
    inner_folds: int = setting(1, "choose the epoch count on 1 inner group split (early stopping) or on the "
                               "loss averaged over K inner group folds")
    augment: int = setting(3, "views per training clip (mirror, temporal jitter)")
    finetune: bool = setting(False, "train the backbone too (end to end)")
    backbone_lr: float = setting(1e-5, "with --finetune: learning rate of the backbone")
    cache_dir: str | None = setting(None, "feature cache folder (none: ~/.cache/xvad/features)")
    stream_fps: float | None = setting(8.0, "also score each held-out clip as a stream at this rate would: every "
                                       "window of --frames frames, 2 apart, over the whole clip, the highest "
                                       "(metrics.json: as_stream; not with --finetune); a model trained "
                                       "without --fps samples streams at this rate")
    classes: list[str] | None = setting(None, "class order, comma-separated, normal class first (none: "
                                        "normal-like names first)", parse=_names, metavar="NAME,NAME[,...]")

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the CRNN these settings train."""
        return dict(self.kwargs(), freeze_backbone=not self.finetune)


# Named sets of settings; the command line applies one before the options given explicitly.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(backbone="vgg19", size=224, crop="center", pooling="avg", input="rgb", temporal="gru", augment=1,
                  folds=0, stream_fps=None),
}
PRESET_HELP = {"paper": "the paper's layout: VGG19 on every frame, average-pooled, a GRU and an MLP on its "
                        "last state; one view per clip, one group-wise hold-out split"}


# -- the command line ---------------------------------------------------------------------------
def _show(value: Any) -> str:
    if value is None:
        return "none"
    return ",".join(value) if isinstance(value, list) else str(value)


def _option_type(f: Field, hint: Any) -> Callable[[str], Any]:
    """The argparse ``type`` of a field: its own parser, else its annotation (``X | None`` also takes
    "none"); ValueError becomes argparse's one-line message naming the option."""
    parse = f.metadata.get("parse")
    if parse is None:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args else hint
        optional = type(None) in typing.get_args(hint)
        parse = (lambda v: None if v.lower() == "none" else base(v)) if optional else base

    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", f.name)
    return convert


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, presets: dict | None = None) -> None:
    """One ``--option`` per field of ``cls`` (``norm_eps`` -> ``--norm-eps``), with its help, choices
    and default; ``presets`` adds ``--preset``. Options not given stay out of the namespace, so that
    :func:`from_args` can apply a preset first and the explicit options over it."""
    hints = typing.get_type_hints(cls)
    if presets:
        parser.add_argument("--preset", choices=list(presets), default=None,
                            help="start from these settings instead of the defaults; options given "
                                 "explicitly override them")
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default, so it cannot be an option")
        shown = f"default {_show(default)}"
        for name, values in (presets or {}).items():
            if f.name in values:
                shown += f"; {name}: {_show(values[f.name])}"
        kw: dict[str, Any] = dict(default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} ({shown})")
        if hints[f.name] is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _option_type(f, hints[f.name])
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]()
            if f.metadata.get("metavar"):
                kw["metavar"] = f.metadata["metavar"]
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw)


def from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The ``cls`` settings of parsed ``args``: defaults, then ``--preset``, then explicit options."""
    base = cls.preset(args.preset) if getattr(args, "preset", None) else cls()
    return replace(base, **{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
