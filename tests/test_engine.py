"""The OpenVINO engine computes the same backbone features as torch in fp32, keeps its converted
backbone on disk, follows weight changes, and leaves gradients (explanations) to torch."""
import glob
import importlib.util
import os
import threading

import pytest
import torch

import xvad
from xvad.errors import ConfigError
from xvad.models import CRNN
from xvad.models.engine import resolve_engine

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino not installed (pip install openvino)")

SAMPLES = os.path.join(os.path.dirname(xvad.__file__), "samples", "demo-footage")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test converts into a folder of its own (the engine's disk cache follows XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "xvad" / "openvino"


@pytest.fixture(scope="module")
def shipped_clip():
    """The shipped model's input for a real clip of the sample footage (a fight, two streams)."""
    model = xvad.load_model()
    path = sorted(glob.glob(os.path.join(SAMPLES, "fight", "*")))[0]
    return xvad.read_clip(path, model)


def features(model, clip):
    with torch.inference_mode():
        return model.frame_features(clip)


def test_openvino_features_and_scores_equal_torch_fp32_on_real_footage(shipped_clip):
    torch_fp32 = xvad.load_model().eval().set_precision("fp32")
    engine = xvad.load_model().eval().set_engine("openvino")
    assert engine.engine == "openvino" and engine.precision == "fp32"     # "auto" precision: fp32 with OpenVINO
    ref, got = features(torch_fp32, shipped_clip), features(engine, shipped_clip)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    assert (got - ref).abs().max() < 1e-3 * ref.abs().max()
    cos = torch.nn.functional.cosine_similarity(got, ref)
    assert cos.min() > 0.99999
    with torch.inference_mode():
        p_ref = torch_fp32.classify(ref[None]).softmax(-1)
        p_got = engine.classify(got[None]).softmax(-1)
    assert (p_got - p_ref).abs().max() < 1e-4
    # any batch size: each frame's feature is the same whether it comes alone or with others
    assert (features(engine, shipped_clip[:3]) - got[:3]).abs().max() < 1e-4


def test_converted_backbone_is_kept_and_read_back(shipped_clip, own_cache, monkeypatch):
    first = xvad.load_model().eval().set_engine("openvino")
    a = features(first, shipped_clip[:2])
    files = sorted(os.listdir(own_cache))
    assert [f[-4:] for f in files] == [".bin", ".xml"]
    import openvino

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of read from the cache")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    second = xvad.load_model().eval().set_engine("openvino")
    assert torch.equal(features(second, shipped_clip[:2]), a)
    assert sorted(os.listdir(own_cache)) == files


def test_a_damaged_cache_file_is_converted_again(shipped_clip, own_cache, caplog):
    model = xvad.load_model().eval().set_engine("openvino")
    a = features(model, shipped_clip[:2])
    xml = glob.glob(str(own_cache / "*.xml"))[0]
    with open(xml, "w") as f:
        f.write("<net broken")
    again = xvad.load_model().eval().set_engine("openvino")
    assert torch.allclose(features(again, shipped_clip[:2]), a, atol=1e-5)
    assert "converting it again" in caplog.text
    assert open(xml).read().startswith("<?xml")


def tiny(seed: int) -> CRNN:
    torch.manual_seed(seed)
    return CRNN("tiny", num_classes=2, frames=4, size=32, temporal="pool", pooling="avg").eval()


def test_new_weights_are_compiled_again():
    model, other = tiny(0).set_engine("openvino"), tiny(1)
    x = torch.rand(3, 3, 32, 32)
    before = features(model, x)
    model.load_state_dict(other.state_dict())
    after = features(model, x)
    ref = features(other.set_precision("fp32"), x)
    assert not torch.allclose(before, after)
    assert (after - ref).abs().max() < 1e-4 * max(1.0, float(ref.abs().max()))


def test_gradients_still_flow_through_torch(shipped_clip):
    model = xvad.load_model().eval().set_engine("openvino")
    x = shipped_clip[:2].clone().requires_grad_(True)
    logits = model.classify(model.frame_features(x)[None])
    logits[0, 1].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_threads_share_one_compiled_backbone(shipped_clip):
    model = xvad.load_model().eval().set_engine("openvino")
    want = features(model, shipped_clip[:4])
    got: list[torch.Tensor] = []

    def work() -> None:
        for _ in range(3):
            got.append(features(model, shipped_clip[:4]))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 9 and all(torch.equal(g, want) for g in got)


def test_engine_choice_and_errors():
    assert resolve_engine("auto", "cpu") == "openvino"
    assert resolve_engine("torch", "cpu") == "torch"
    assert resolve_engine("auto", "meta") == "torch"            # OpenVINO runs on the CPU only
    with pytest.raises(ConfigError, match="engine openvino runs on the CPU"):
        resolve_engine("openvino", "meta")
    with pytest.raises(ConfigError, match="engine must be one of auto, torch, openvino, not 'onnx'"):
        resolve_engine("onnx", "cpu")


def test_an_explicit_precision_is_kept_and_runs_torch(shipped_clip):
    bf16 = xvad.load_model().eval().set_precision("bf16").set_engine("auto")
    assert bf16.precision == "bf16"
    torch_bf16 = xvad.load_model().eval().set_precision("bf16")
    assert torch.equal(features(bf16, shipped_clip[:2]), features(torch_bf16, shipped_clip[:2]))
    torch_only = xvad.load_model().eval().set_engine("torch")
    assert torch_only.config["precision"] == "auto"


def test_service_and_detect_take_the_engine(tmp_path):
    from xvad.service.settings import load_settings

    bad = tmp_path / "xvad.yaml"
    bad.write_text("data: d\nengine: onnx\ncameras: []\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(str(bad))
    message = str(exc.value)
    assert "xvad.yaml" in message and "engine" in message and "\n" not in message
    good = tmp_path / "ok.yaml"
    good.write_text("data: d\nengine: torch\ncameras: []\n")
    assert load_settings(str(good)).engine == "torch"

    from xvad.stream.detector import Detector

    model = tiny(0)
    Detector(model, engine="openvino")
    assert model.engine == "openvino"
    with pytest.raises(xvad.errors.StreamError, match="engine must be one of"):
        Detector(tiny(0), engine="gpu")
