"""Which runtime computes a frozen backbone's features at inference: torch, or OpenVINO on the CPU.

OpenVINO compiles the backbone for the CPU it runs on (its own convolution kernels, batch norms folded,
activations fused). The function is the same in fp32 (features within 1e-4 of torch's fp32 ones), and
on the x86 CPUs measured here it is about twice as fast as torch's bf16 (``bench/bench_engine.py``), so
a service that watches many cameras scores exact fp32 features for less CPU than rounded bf16 ones.
Training and explanations, which need gradients, always run torch. The compiled form is made from the
backbone by :func:`openvino.convert_model` (a few seconds) and kept on disk, keyed by the backbone's
weights, so later processes only compile it (a fraction of a second).
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..hashing import module_sha256
from .fold import Derived

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    """True when the ``openvino`` package can be imported (an x86 or ARM wheel from PyPI)."""
    return importlib.util.find_spec("openvino") is not None


def resolve_engine(engine: str, device: torch.device | str) -> str:
    """Map "auto" to "openvino" (installed, CPU) or "torch"; check forced values (ConfigError, one line)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    cpu = torch.device(device).type == "cpu"
    if engine == "auto":
        return "openvino" if cpu and openvino_available() else "torch"
    if engine == "openvino":
        if not openvino_available():
            raise ConfigError("engine openvino: the openvino package is not installed (pip install openvino)")
        if not cpu:
            raise ConfigError(f"engine openvino runs on the CPU; the model is on {torch.device(device)}")
    return engine


def cache_dir() -> str:
    """Where converted backbones are kept: ``$XDG_CACHE_HOME/xvad/openvino`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "xvad", "openvino")


def _digest(backbone: nn.Module, height: int, width: int) -> str:
    """A hash of the backbone's class, weights, the image size and the OpenVINO version: the converted
    file's name."""
    import openvino

    key = f"{type(backbone).__qualname__}|{height}x{width}|{openvino.__version__}|{module_sha256(backbone)}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def converted(backbone: nn.Module, height: int, width: int, folder: str | None = None) -> Any:
    """The OpenVINO model of ``backbone`` in eval mode for ``height`` x ``width`` images (any batch: the
    SAME padding of a TensorFlow-made backbone is worked out from the size, so the size is fixed), from
    ``folder`` when it was converted before, else converted now and saved there atomically (a failed save
    only logs)."""
    import openvino as ov

    folder = folder or cache_dir()
    xml = os.path.join(folder, _digest(backbone, height, width) + ".xml")
    core = ov.Core()
    if os.path.exists(xml):
        try:
            return core.read_model(xml)
        except RuntimeError as exc:
            log.warning("%s: cannot read the converted backbone (%s); converting it again", xml, exc)
    was_training = backbone.training
    backbone.eval()
    try:
        # traced (OpenVINO uses torch.jit.trace, which torch marks deprecated) at this size: the padding
        # worked out from it is a constant on purpose, so neither warning says anything here
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ov.convert_model(backbone, example_input=torch.zeros(1, 3, height, width),
                                      input=[(-1, 3, height, width)])
    finally:
        backbone.train(was_training)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".tmp-") as tmp:
            ov.save_model(model, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
            os.replace(os.path.join(tmp, "model.bin"), xml[:-4] + ".bin")   # the weights first, then
            os.replace(os.path.join(tmp, "model.xml"), xml)                 # the file that names them
    except OSError as exc:
        log.warning("cannot keep the converted backbone in %s (%s); it is converted again next time", folder, exc)
    return model


class OpenVINOBackbone(Derived):
    """A frozen backbone compiled by OpenVINO for the CPU in fp32, made when first called (on as many
    threads as torch has in the calling thread) and made again when the backbone's weights or the image
    size change; thread-safe (one inference request per thread and compiled model)."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def compile(self, backbone: nn.Module, height: int, width: int) -> Any:
        """The compiled backbone for ``height`` x ``width`` images (compiled now if new)."""
        def make() -> Any:
            import openvino as ov

            config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_NUM_THREADS": torch.get_num_threads(), "ENABLE_CPU_PINNING": False}
            return ov.Core().compile_model(converted(backbone, height, width), "CPU", config)

        return self.made(backbone, make, height, width)

    def __call__(self, backbone: nn.Module, frames: torch.Tensor) -> torch.Tensor:
        """``backbone(frames)`` for fp32 frames ``[N, 3, H, W]`` on the CPU, computed by OpenVINO."""
        compiled = self.compile(backbone, frames.shape[-2], frames.shape[-1])
        local = self._local
        if getattr(local, "compiled", None) is not compiled:
            local.compiled, local.request = compiled, compiled.create_infer_request()
        out = local.request.infer({0: frames.detach().float().contiguous().numpy()})
        return torch.from_numpy(next(iter(out.values())).copy())
