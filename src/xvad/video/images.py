"""What a model's backbone looks at for each frame: the frame itself, its motion image (the difference
with the next decoded frame) or its optical flow, or several of these stacked as streams."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..errors import ConfigError
from .crop import MOTION_LEVEL, Region
from .tensor import fit

INPUTS = ("rgb", "motion", "flow")                      # what a model's backbone looks at, see model_images
SHRINKS = ("first", "last")                             # when frames are shrunk to the input, see model_images
MOTION_GAIN = 4                                         # frame differences are small: scale them into view
MOTION_RULE = f"|next-this|x{MOTION_GAIN}"              # recorded in feature caches: change it, recompute them
FLOW_WIDTH = 320                                        # optical flow is computed on grey frames this wide
FLOW_GAIN = 8                                           # grey levels per pixel of displacement
FLOW_RULE = f"DIS-medium@{FLOW_WIDTH}px,x{FLOW_GAIN}"    # recorded in feature caches, like MOTION_RULE
SMALL_FLOW_RULE = f"DIS-medium@input,x{FLOW_GAIN}"        # the same, for frames shrunk first
# OpenCV's DIS presets, by a model's ``flow`` setting; checkpoints saved before the setting used medium
FLOW_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


def flow_rule(config: dict) -> str:
    """How a model with ``config`` makes its flow images, as feature caches record it (medium models:
    `FLOW_RULE` or `SMALL_FLOW_RULE`)."""
    where = "input" if config.get("shrink", "last") == "first" else f"{FLOW_WIDTH}px"
    return f"DIS-{config.get('flow', 'medium')}@{where},x{FLOW_GAIN}"


def input_streams(input: str) -> list[str]:
    """The image streams of a model's ``input``: one of `INPUTS`, or several joined by "+"
    ("motion+flow" -> ["motion", "flow"]). Each stream goes through the backbone on its own."""
    streams = str(input).split("+")
    if any(s not in INPUTS for s in streams) or len(set(streams)) != len(streams):
        raise ConfigError(f"input must be one of {', '.join(INPUTS)}, or several joined by '+' "
                         f"(e.g. motion+flow), not {input!r}")
    return streams


def needs_partner(config: dict) -> bool:
    """Whether a model with ``config`` needs each frame's partner (for motion or flow images, or to see
    where things move: the motion crop)."""
    return config.get("crop") == "motion" or any(s != "rgb" for s in input_streams(config.get("input", "rgb")))


def motion_images(frames: np.ndarray, partners: np.ndarray) -> np.ndarray:
    """``clip(4 * |I(t+1) - I(t)|, 0, 255)`` per pixel and channel, uint8 [T, H, W, 3], where I(t+1) is
    each frame's partner (see :func:`read_frame_pairs`).

    The difference of two consecutive decoded frames keeps what moved (fists, falling bodies) and
    drops the static scene, which a frozen ImageNet backbone otherwise describes first.
    """
    diff = np.abs(frames.astype(np.int16) - partners.astype(np.int16)) * MOTION_GAIN
    return np.minimum(diff, 255).astype(np.uint8)


def flow_images(frames: np.ndarray, partners: np.ndarray,
                preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, width: int | None = FLOW_WIDTH) -> np.ndarray:
    """The optical flow from each frame to its partner drawn as an image, uint8 [T, H, W, 3]:
    R = 128 + 8·dx, G = 128 + 8·dy, B = 16·|d| (clipped), with d in pixels of a ``width`` px wide copy
    (``None``: of the frames themselves, for frames already shrunk to the model's input).

    Unlike a frame difference, flow says where things went and how fast, whatever their texture.
    Dense DIS flow (OpenCV) on grey frames, then scaled back to the frame size, at a model's
    ``preset`` (`FLOW_PRESETS`: the faster ones are coarser).
    """
    frames, partners = np.asarray(frames), np.asarray(partners)
    lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    size = (w, h) if width is None else (width, max(8, round(h * width / w)))
    dis = cv2.DISOpticalFlow.create(preset)

    def grey(image: np.ndarray) -> np.ndarray:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        return image if image.shape[::-1] == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)

    out = np.empty(frames.shape, np.uint8)
    flat_in, flat_partner, flat_out = (a.reshape(-1, h, w, 3) for a in (frames, partners, out))
    for i in range(len(flat_in)):
        # flow=None asks for a new array; OpenCV's stub does not list None
        d = dis.calc(grey(flat_in[i]), grey(flat_partner[i]), None)  # type: ignore[call-overload]
        image = np.dstack([128 + FLOW_GAIN * d[..., 0], 128 + FLOW_GAIN * d[..., 1],
                           2 * FLOW_GAIN * np.hypot(d[..., 0], d[..., 1])])
        image = np.clip(image, 0, 255).astype(np.uint8)
        flat_out[i] = image if size == (w, h) else cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(*lead, h, w, 3)


def shrink_images(frames: np.ndarray, config: dict, regions: Sequence[Region] | None = None) -> np.ndarray:
    """uint8 frames ``[..., H, W, 3]`` shrunk to what a model with ``config`` takes, by OpenCV's area
    averaging: the ``size`` x ``size`` square of a centre crop, the whole frame squeezed ("full"), the
    frame fitted inside the square ("pad", letterboxed later by :func:`~xvad.video.tensor.preprocess`),
    or each frame's own square (``regions``, one per frame, for "motion": :mod:`.crop`). A fixed crop's
    place in the frame is :func:`~xvad.video.tensor.fit`'s, as for a frame resized last."""
    frames = np.asarray(frames)
    lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
    size, crop = int(config["size"]), config.get("crop", "center")
    if crop == "motion":
        if regions is None:
            raise ConfigError("crop motion: each frame's square (regions) must be given")
        flat = frames.reshape(-1, h, w, frames.shape[-1])
        if len(regions) != len(flat):
            raise ValueError(f"{len(regions)} regions for {len(flat)} frames")
        out = np.empty((len(flat), size, size, frames.shape[-1]), np.uint8)
        for i, (image, region) in enumerate(zip(flat, regions)):
            out[i] = cv2.resize(region.cut(image), (size, size), interpolation=cv2.INTER_AREA)
        return out.reshape(*lead, size, size, frames.shape[-1])
    nh, nw, top, left = fit(h, w, size, crop)
    top, left = max(0, top), max(0, left)
    oh, ow = min(nh, size), min(nw, size)
    flat = frames.reshape(-1, h, w, frames.shape[-1])
    out = np.empty((len(flat), oh, ow, frames.shape[-1]), np.uint8)
    for i, image in enumerate(flat):
        small = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        out[i] = small[top: top + oh, left: left + ow]
    return out.reshape(*lead, oh, ow, frames.shape[-1])


def model_images(frame: np.ndarray, partner: np.ndarray | None, config: dict,
                 regions: Sequence[Region] | None = None) -> np.ndarray:
    """The image(s) a model with ``config`` feeds its backbone for ``frame`` (any leading shape), given
    its partner frame (``None``, or a frame of another size: no motion). Several streams are stacked on
    the channel axis, 3 channels each, in the order ``config["input"]`` names them. With the motion crop,
    ``regions`` gives each frame's square (:func:`~xvad.video.crop.input_regions`).

    With ``config["shrink"] == "first"`` the frames are shrunk to the model's input first and the
    motion and flow images made from the small frames, a few times cheaper than at a camera's own
    resolution (and the resize to the input is then a no-op); checkpoints without the setting were
    trained on images made at the frame's resolution ("last"). ``config["flow"]`` names the DIS preset
    of the flow stream (`FLOW_PRESETS`; checkpoints without it: medium)."""
    streams = input_streams(config.get("input", "rgb"))
    first = config.get("shrink", "last") == "first"
    if partner is None or partner.shape != frame.shape:   # none, or the stream changed size: no motion
        partner = None
    if config.get("crop") == "motion" and not first:
        raise ConfigError("crop motion cuts each frame's square before shrinking it: it needs shrink first")
    if first:
        frame = shrink_images(frame, config, regions)
        partner = None if partner is None else shrink_images(partner, config, regions)
    if streams == ["rgb"]:
        return frame
    if partner is None:
        partner = frame
    width = None if first else FLOW_WIDTH
    preset = FLOW_PRESETS[config.get("flow", "medium")]
    make = {"rgb": lambda: frame, "motion": lambda: motion_images(frame, partner),
            "flow": lambda: flow_images(frame, partner, preset=preset, width=width)}
    parts = [make[s]() for s in streams]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def flip_images(images: np.ndarray, config: dict) -> np.ndarray:
    """Mirror model images ``[..., H, W, 3 * streams]`` left to right, as the mirrored video would give
    them: a flow stream's horizontal component also changes sign."""
    out = np.ascontiguousarray(images[..., ::-1, :])
    for k, stream in enumerate(input_streams(config.get("input", "rgb"))):
        if stream == "flow":
            out[..., 3 * k] = np.minimum(256 - out[..., 3 * k].astype(np.int16), 255).astype(np.uint8)
    return out


STILL_LEVEL = MOTION_LEVEL   # levels: a pixel that changes by more than this moved (as for the motion crop)
STILL_SHARE = 0.001      # a frame is still when fewer than this share of its pixels moved


def is_still(frame: np.ndarray, partner: np.ndarray | None, level: int = STILL_LEVEL,
             share: float = STILL_SHARE) -> bool:
    """Whether nothing moves between ``frame`` and its partner: fewer than ``share`` of the pixels
    change by more than ``level`` in any channel. A motion or flow model sees (almost) an empty image
    for such a frame, so its backbone feature is (almost) that of an empty image."""
    if partner is None or partner.shape != frame.shape:
        return False
    moved = np.abs(frame.astype(np.int16) - partner.astype(np.int16)).max(axis=-1) > level
    return float(moved.mean()) < share


def still_image_exact(config: dict) -> bool:
    """Whether a still frame's model images are the same whatever the scene: every stream is motion or
    flow (an RGB stream shows the scene itself)."""
    return "rgb" not in input_streams(config.get("input", "rgb"))
