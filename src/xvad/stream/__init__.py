"""Real-time detection on streams and long videos: ``Detector(model).run(source)`` yields a score
per window, with k-of-n alerts, a JSON-lines events file, an annotated video and Grad-CAM
explanations of every alert written in the background.

Each sampled frame goes through the backbone once; its feature waits in a ring buffer and every
``stride`` frames the last ``window`` features go through the GRU and head. The command line is
``xvad detect`` (:mod:`xvad.stream.cli`).
"""
from ..errors import StreamError
from ..video.decode import SourceSpec, open_source, parse_source
from .detector import Detector, WindowResult, window_scores
from .events import EventLog
from .policy import AlertPolicy, alert_spans, parse_alert
from .source import Reconnect

__all__ = ["AlertPolicy", "Detector", "EventLog", "Reconnect", "SourceSpec", "StreamError", "WindowResult",
           "alert_spans", "open_source", "parse_alert", "parse_source", "window_scores"]
