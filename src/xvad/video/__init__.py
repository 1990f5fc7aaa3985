"""Video in: name, open and decode any source (:mod:`.decode`), choose frames (:mod:`.sample`), make the
images a backbone sees (:mod:`.images`) and the tensors a model takes (:mod:`.tensor`), and load
clips from files (:mod:`.clip`). The live stream reader (:mod:`xvad.stream.source`) is built on the
same pieces."""
from ..errors import VideoError, VideoWarning
from .clip import (
                   Clip,
                   VideoInfo,
                   View,
                   frame_tensor,
                   iter_frames,
                   load_clip,
                   probe,
                   read_clip,
                   read_frame_pairs,
                   read_frames,
                   read_input,
)
from .decode import SourceSpec, open_source, parse_source
from .images import (
                   FLOW_PRESETS,
                   FLOW_RULE,
                   INPUTS,
                   MOTION_RULE,
                   SHRINKS,
                   SMALL_FLOW_RULE,
                   flip_images,
                   flow_images,
                   flow_rule,
                   input_streams,
                   model_images,
                   motion_images,
                   needs_partner,
                   shrink_images,
)
from .sample import Nearest, Partners, with_partners
from .tensor import CROPS, preprocess, preprocess_as

__all__ = ["CROPS", "FLOW_PRESETS", "FLOW_RULE", "INPUTS", "MOTION_RULE", "SHRINKS", "SMALL_FLOW_RULE", "Clip",
           "Nearest", "Partners",
           "SourceSpec", "VideoError", "VideoInfo", "VideoWarning", "View", "flip_images", "flow_images", "flow_rule",
           "frame_tensor", "input_streams", "iter_frames", "load_clip", "model_images", "motion_images",
           "needs_partner", "open_source", "parse_source", "preprocess", "preprocess_as", "probe", "read_clip",
           "read_frame_pairs", "read_frames", "read_input", "shrink_images", "with_partners"]
