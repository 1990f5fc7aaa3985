"""Explanation methods: numbers against Captum and hand computations, mechanics, state, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xvad.explain import METHODS, ExplainError, Explanation, explain, faithfulness, sanity_check
from xvad.explain.localisation import box_area_share, energy_in_box, localisation, pointing_game
from xvad.explain.sanity import randomisation_stages, rank, spearman
from xvad.models import CRNN

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")  # its "setting requires_grad" notes

torch.set_num_threads(2)
B, T, S = 2, 3, 32


def make_model(frames: int = T, size: int = S, double: bool = True, seed: int = 0, **kw) -> CRNN:
    torch.manual_seed(seed)
    model = CRNN("tiny", size=size, frames=frames, hidden=16, precision="fp32", **kw)
    with torch.no_grad():  # give the head some weight so the logits differ clearly between clips
        for p in model.head.parameters():
            p.mul_(4)
    return model.double() if double else model


@pytest.fixture(scope="module")
def model64() -> CRNN:
    """The production CRNN converted with ``.double()``: the Captum comparisons run through it."""
    return make_model()


@pytest.fixture(scope="module")
def clips64() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(B, T, 3, S, S, dtype=torch.float64)


@pytest.fixture(scope="module")
def captum_attr():
    """``captum.attr``, for the tests that compare with Captum; only they skip without it."""
    return pytest.importorskip("captum.attr", reason="captum is not installed")


def captum_view(model: CRNN):
    """What a Captum user passes: the model in eval mode, taking the 5-D clip batch."""
    model.eval()
    return model


def layer_parts(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: int):
    """Activations and gradients at ``layer`` by plain autograd (independent of xvad.explain)."""
    model.eval()
    store = {}

    def hook(module, inputs, output):
        output.retain_grad()
        store["a"] = output

    handle = layer.register_forward_hook(hook)
    try:
        xr = x.clone().requires_grad_(True)  # frozen backbone: the graph must start at the input
        model(xr)[:, target].sum().backward()
    finally:
        handle.remove()
    a = store["a"]
    shape = (x.shape[0], x.shape[1], *a.shape[1:])
    return a.detach().reshape(shape), a.grad.reshape(shape)


# -- agreement with Captum (float64) -----------------------------------------------------------
def test_double_model_computes_in_float64(model64, clips64):
    """The comparisons below hold to float64 tolerances only if no step of CRNN.forward casts down."""
    seen = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0].dtype, o)))
             for name, m in (("backbone", model64.backbone), ("gru", model64.gru), ("head", model64.head))]
    try:
        with torch.no_grad():
            logits = model64.eval()(clips64)
    finally:
        for h in hooks:
            h.remove()
    assert logits.dtype == torch.float64
    assert seen["backbone"][0] == seen["gru"][0] == seen["head"][0] == torch.float64
    assert seen["backbone"][1].dtype == torch.float64


@pytest.mark.parametrize("target", [0, 1])
def test_gradcam_matches_captum_layergradcam(model64, clips64, target, captum_attr):
    layer = model64.backbone.body[7]  # the tiny backbone's CAM layer: last ReLU, "backbone.body.7"
    ours = explain(model64, clips64, "gradcam", target=target, normalize="none")
    ref = captum_attr.LayerGradCam(captum_view(model64), layer).attribute(
        clips64, target=target, relu_attributions=True).detach()  # [B*T, 1, h, w]: per-frame pooling
    ref = ref.reshape(B, T, *ref.shape[-2:]).numpy()
    assert ours.options["layer"] == "backbone.body.7"
    assert ours.raw.shape == ref.shape
    assert ref.max() > 0
    np.testing.assert_allclose(ours.raw, ref, rtol=1e-5, atol=1e-6 * ref.max())


def test_two_stream_maps_add_the_streams_up_and_match_captum(captum_attr):
    """motion+flow: a frame's two images share the pixel grid, so its Grad-CAM is relu of the sum of
    the two images' CAMs (Captum, per image, without its relu), and saliency is the largest gradient
    over all six input channels."""
    torch.manual_seed(3)
    model = CRNN("tiny", size=S, frames=T, input="motion+flow", temporal="pool", precision="fp32").double().eval()
    with torch.no_grad():
        for head in model.head:
            head[-1].weight.normal_()
    x = torch.randn(B, T, 6, S, S, dtype=torch.float64)
    ours = explain(model, x, "gradcam", target=1, normalize="none")
    ref = captum_attr.LayerGradCam(model, model.backbone.body[7]).attribute(
        x, target=1, relu_attributions=False).detach()            # [B*T*2, 1, h, w], frame-major
    ref = ref.reshape(B, T, 2, *ref.shape[-2:]).sum(2).clamp(min=0).numpy()
    assert ref.max() > 0 and ours.raw.shape == ref.shape
    np.testing.assert_allclose(ours.raw, ref, rtol=1e-5, atol=1e-6 * ref.max())
    sal = explain(model, x, "saliency", target=1, normalize="none")
    grads = captum_attr.Saliency(model).attribute(x, target=1, abs=True)
    np.testing.assert_allclose(sal.raw, grads.amax(2).numpy(), rtol=1e-5, atol=1e-8)
    with pytest.raises(ExplainError, match=r"\[T, 6, H, W\]"):
        explain(model, x[:, :, :3], "gradcam")


def test_gradcam_named_layer_matches_captum(model64, clips64, captum_attr):
    layer = model64.backbone.body[3]  # conv2 (before its ReLU), 16 x 16
    ours = explain(model64, clips64, "gradcam", target=1, layer="backbone.body.3", normalize="none")
    ref = captum_attr.LayerGradCam(captum_view(model64), layer).attribute(
        clips64, target=1, relu_attributions=True).detach()
    ref = ref.reshape(B, T, 16, 16).numpy()
    np.testing.assert_allclose(ours.raw, ref, rtol=1e-5, atol=1e-6 * ref.max())


def test_saliency_matches_captum(model64, clips64, captum_attr):
    ours = explain(model64, clips64, "saliency", target=1, normalize="none")
    ref = captum_attr.Saliency(captum_view(model64)).attribute(clips64, target=1, abs=True)
    np.testing.assert_allclose(ours.raw, ref.amax(2).numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.frame_importance, (ref * clips64).abs().sum((2, 3, 4)).numpy(), rtol=1e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_middle"])
def test_integrated_gradients_matches_captum(model64, clips64, method, captum_attr):
    mean, std = torch.tensor(model64.config["mean"]), torch.tensor(model64.config["std"])
    black = ((0 - mean) / std).double().view(1, 1, 3, 1, 1).expand_as(clips64)
    ours = explain(model64, clips64, "integrated_gradients", target=1, steps=8, rule=method, baseline="black",
                   normalize="none", sign="all")
    ig = captum_attr.IntegratedGradients(captum_view(model64))
    ref, delta = ig.attribute(clips64, baselines=black, target=1, n_steps=8, method=method,
                              return_convergence_delta=True)
    np.testing.assert_allclose(ours.raw, ref.sum(2).numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.frame_importance, ref.sum((2, 3, 4)).numpy(), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(ours.options["completeness_error"], delta.abs().numpy(), rtol=1e-4, atol=1e-9)


def test_integrated_gradients_trapezoid_weights_vs_captum(model64, clips64, captum_attr):
    # Captum's "riemann_trapezoid" samples linspace(0, 1, n) but weighs by 1/n, so its weights sum
    # to (n-1)/n; ours use the trapezoid rule's 1/(n-1). The attributions differ by that factor only.
    n = 6
    ours = explain(model64, clips64, "integrated_gradients", target=0, steps=n, rule="riemann_trapezoid",
                   baseline="zero", normalize="none", sign="all")
    ref = captum_attr.IntegratedGradients(captum_view(model64)).attribute(
        clips64, baselines=torch.zeros_like(clips64), target=0, n_steps=n, method="riemann_trapezoid")
    np.testing.assert_allclose(ours.raw, ref.sum(2).numpy() * n / (n - 1), rtol=1e-5, atol=1e-9)


def test_integrated_gradients_completeness(model64, clips64):
    ours = explain(model64, clips64[0], "integrated_gradients", target=1, steps=64, baseline="blurred",
                   normalize="none", sign="all")
    model64.eval()
    with torch.no_grad():
        from xvad.explain.base import gaussian_blur
        blurred = gaussian_blur(clips64[0], S / 10)
        f = model64(torch.stack([clips64[0], blurred]))[:, 1]
    assert ours.options["logit_difference"] == pytest.approx(float(f[0] - f[1]), rel=1e-6)
    err = abs(float(ours.frame_importance.sum()) - float(f[0] - f[1]))
    assert ours.options["completeness_error"] == pytest.approx(err, rel=1e-3, abs=1e-7)
    assert err < 2e-2 * abs(float(f[0] - f[1]))  # piecewise-linear model: quadrature is not exact


def test_guided_backprop_matches_captum(model64, clips64, captum_attr):
    ours = explain(model64, clips64, "guided_backprop", target=1, normalize="none")
    ref = captum_attr.GuidedBackprop(captum_view(model64)).attribute(clips64, target=1)
    np.testing.assert_allclose(ours.raw, ref.abs().amax(2).numpy(), rtol=1e-5, atol=1e-10)
    plain = explain(model64, clips64, "saliency", target=1, normalize="none")
    assert not np.allclose(ours.raw, plain.raw)


class FunctionalNet(nn.Module):
    """Per-frame conv net calling relu6 / relu as functions, like EfficientNet's blocks.

    With ``reference=True`` it does guided backprop by itself, independently of xvad.explain: a
    tensor hook on each activation's output drops negative incoming gradients before the
    activation's own backward applies its mask, which is exactly the guided rule.
    """

    def __init__(self, reference: bool = False) -> None:
        super().__init__()
        self.reference = reference
        self.c1, self.c2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def _guide(self, y):
        if self.reference and y.requires_grad:
            y.register_hook(lambda g: g.clamp(min=0))
        return y

    def forward(self, x):
        b, t = x.shape[:2]
        y = self._guide(F.relu6(self.c1(x.reshape(b * t, *x.shape[2:]))))
        y = self._guide(self.c2(y).relu())
        return self.fc(y.mean((2, 3)).reshape(b, t, -1).mean(1))


def test_guided_backprop_through_functional_relus():
    torch.manual_seed(0)
    net = FunctionalNet().double()
    reference = FunctionalNet(reference=True).double()
    reference.load_state_dict(net.state_dict())
    x = torch.randn(1, 2, 3, 12, 12, dtype=torch.float64) * 4  # large enough that relu6 saturates
    assert (net.c1(x[0]) > 6).any()
    ours = explain(net, x, "guided_backprop", target=1, normalize="none")
    xr = x.clone().requires_grad_(True)
    reference(xr)[:, 1].sum().backward()
    np.testing.assert_allclose(ours.raw, xr.grad.abs().amax(2).numpy(), rtol=1e-6, atol=1e-12)
    plain = explain(net, x, "saliency", target=1, normalize="none")
    assert not np.allclose(ours.raw, plain.raw)


def test_guided_backprop_needs_relus():
    class NoRelu(FunctionalNet):
        def forward(self, x):
            b, t = x.shape[:2]
            y = torch.tanh(self.c2(torch.tanh(self.c1(x.reshape(b * t, *x.shape[2:])))))
            return self.fc(y.mean((2, 3)).reshape(b, t, -1).mean(1))

    with pytest.raises(ExplainError, match="needs ReLU"):
        explain(NoRelu(), torch.randn(1, 2, 3, 8, 8), "guided_backprop")


# -- hand computations -------------------------------------------------------------------------
def test_cam_variants_match_hand_computation(model64, clips64):
    a, g = layer_parts(model64, clips64, model64.backbone.body[7], 1)  # [B, T, C, h, w]
    frame_w = g.mean((3, 4), keepdim=True)
    clip_w = g.mean((1, 3, 4), keepdim=True)
    expected = {
        ("gradcam", "frame"): torch.relu((frame_w * a).sum(2)),
        ("gradcam", "clip"): torch.relu((clip_w * a).sum(2)),
        ("layercam", None): torch.relu((torch.relu(g) * a).sum(2)),
    }
    # Grad-CAM++ per frame, written out per channel from the paper's formula.
    pp = torch.zeros(B, T, *a.shape[-2:], dtype=a.dtype)
    for b in range(B):
        for t in range(T):
            for c in range(a.shape[2]):
                gc, ac = g[b, t, c], a[b, t, c]
                den = 2 * gc ** 2 + ac.sum() * gc ** 3
                alpha = torch.where(den != 0, gc ** 2 / torch.where(den != 0, den, torch.ones_like(den)), 0 * den)
                pp[b, t] += (alpha * torch.relu(gc)).sum() * ac
    expected[("gradcam++", "frame")] = torch.relu(pp)
    for (method, pooling), want in expected.items():
        opts = {} if pooling is None else {"pooling": pooling}
        got = explain(model64, clips64, method, target=1, normalize="none", **opts)
        assert got.options.get("pooling") == pooling
        np.testing.assert_allclose(got.raw, want.numpy(), rtol=1e-5, atol=1e-7 * float(want.max()), err_msg=method)
        np.testing.assert_allclose(got.frame_importance, (a * g).sum((2, 3, 4)).numpy(), rtol=1e-5, atol=1e-12)
    frame = explain(model64, clips64, "gradcam", target=1, normalize="none").raw
    clip = explain(model64, clips64, "gradcam", target=1, normalize="none", pooling="clip").raw
    assert not np.allclose(frame, clip)


def test_frame_importance_is_first_order_contribution(model64, clips64, captum_attr):
    # Summed over frames, gradient x activation at a ReLU layer of a homogeneous path is the same
    # quantity Captum's LayerGradientXActivation gives per element.
    layer = model64.backbone.body[7]
    ours = explain(model64, clips64, "gradcam", target=0)
    ref = captum_attr.LayerGradientXActivation(captum_view(model64), layer).attribute(clips64, target=0).detach()
    np.testing.assert_allclose(ours.frame_importance, ref.reshape(B, T, -1).sum(-1).numpy(), rtol=1e-5, atol=1e-10)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(model64, clips64, captum_attr):
    gg = explain(model64, clips64, "guided_gradcam", target=1, normalize="none")
    gb = captum_attr.GuidedBackprop(captum_view(model64)).attribute(clips64, target=1).abs().amax(2)
    cam = captum_attr.LayerGradCam(model64, model64.backbone.body[7]).attribute(
        clips64, target=1, relu_attributions=True).detach()
    up = F.interpolate(cam, size=(S, S), mode="bilinear", align_corners=False).reshape(B, T, S, S)
    np.testing.assert_allclose(gg.raw, (gb * up).numpy(), rtol=1e-5, atol=1e-12)


def test_occlusion_matches_hand_computation(model64, clips64):
    x = clips64[0]
    model64.eval()
    with torch.no_grad():
        p = model64(x[None]).softmax(1)[0]
        target = int(p.argmax())
        mean_frame = x.mean(0)
        drops = []
        for t in range(T):
            occluded = x.clone()
            occluded[t] = mean_frame
            drops.append(float(p[target] - model64(occluded[None]).softmax(1)[0, target]))
    got = explain(model64, x, "occlusion", normalize="none")
    assert got.target == target
    np.testing.assert_allclose(got.frame_importance, drops, rtol=1e-4, atol=1e-7)
    uniform = np.broadcast_to(np.array(drops)[:, None, None], (T, S, S))
    np.testing.assert_allclose(got.maps, uniform, rtol=1e-4, atol=1e-7)
    # span 2: windows (0,1), (1,2); the middle frame gets the mean of both windows' drops
    span = explain(model64, x, "occlusion", span=2, fill="black", normalize="none", batch_size=1)
    d = span.options["window_drops"]
    np.testing.assert_allclose(span.frame_importance, [d[0], (d[0] + d[1]) / 2, d[1]], rtol=1e-6)


def test_smoothgrad_without_noise_is_saliency(model64, clips64):
    sal = explain(model64, clips64, "saliency", target=1, normalize="none")
    sg = explain(model64, clips64, "smoothgrad", target=1, normalize="none", n_samples=3, noise=0.0, batch_size=2)
    np.testing.assert_allclose(sg.raw, sal.raw, rtol=1e-6, atol=1e-12)
    noisy = explain(model64, clips64, "smoothgrad", target=1, normalize="none", n_samples=3, noise=0.2)
    again = explain(model64, clips64, "smoothgrad", target=1, normalize="none", n_samples=3, noise=0.2)
    assert not np.allclose(noisy.raw, sal.raw)
    np.testing.assert_array_equal(noisy.raw, again.raw)  # seeded


# -- mechanics ---------------------------------------------------------------------------------
class Counter:
    """Counts forward calls of modules and backward passes through the logits."""

    def __init__(self, model: CRNN) -> None:
        self.forward = {"backbone": 0, "gru": 0}
        self.backward = 0
        self.handles = [model.backbone.register_forward_hook(self._fwd("backbone")),
                        model.gru.register_forward_hook(self._fwd("gru")),
                        model.head.register_forward_hook(self._head)]

    def _fwd(self, name):
        def hook(module, inputs, output):
            self.forward[name] += 1
        return hook

    def _head(self, module, inputs, output):
        if output.requires_grad:
            output.register_hook(self._count)

    def _count(self, grad):
        self.backward += 1

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("frames", [2, 7])
@pytest.mark.parametrize("method,forwards,backwards", [
    ("gradcam", 1, 1), ("gradcam++", 1, 1), ("layercam", 1, 1), ("saliency", 1, 1),
    ("guided_backprop", 1, 1), ("guided_gradcam", 1, 2),
])
def test_one_forward_one_backward(method, forwards, backwards, frames):
    model = make_model(frames=frames, double=False)
    counter = Counter(model)
    try:
        explain(model, torch.randn(2, frames, 3, S, S), method)
    finally:
        counter.close()
    assert counter.forward == {"backbone": forwards, "gru": forwards}
    assert counter.backward == backwards


def test_batched_methods_run_in_chunks():
    model = make_model(frames=2, double=False)
    counter = Counter(model)
    try:
        explain(model, torch.randn(2, 2, 3, S, S), "smoothgrad", n_samples=4, batch_size=8)
        assert counter.forward["backbone"] == 2 and counter.backward == 1  # target forward + one chunk
        counter.forward["backbone"], counter.backward = 0, 0
        explain(model, torch.randn(2, 2, 3, S, S), "integrated_gradients", steps=5, batch_size=4)
        assert counter.forward["backbone"] == 1 + 3 and counter.backward == 3  # ends + ceil(10 / 4)
    finally:
        counter.close()


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


@pytest.mark.parametrize("method", list(METHODS))
def test_state_restored(method):
    model = make_model(double=False, freeze_backbone=True)
    model.train()
    model.head[1].weight.requires_grad_(False)  # a mixed set of flags
    model.backbone.body[1].inplace = True
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    assert not modes["backbone"] and modes["gru"]
    explain(model, torch.randn(T, 3, S, S), method)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.backbone.body[1].inplace is True
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_state_restored_after_error():
    model = make_model(double=False)
    model.train()
    with pytest.raises(ExplainError, match="gives"):
        explain(model, torch.randn(T, 3, S, S), "gradcam", layer="gru")
    assert model.training and model.gru.training and hook_count(model) == 0
    assert all(p.requires_grad for p in model.gru.parameters())


@pytest.fixture(scope="module")
def vgg64() -> CRNN:
    """VGG16 (in-place ReLUs) at 32 x 32 in float64; built once, as its classifier is large."""
    torch.manual_seed(0)
    return CRNN("vgg16", size=32, frames=2, hidden=8, precision="fp32").double()


def test_vgg_inplace_relu_layer_and_conv_before_it(vgg64, captum_attr):
    model = vgg64
    x = torch.randn(1, 2, 3, 32, 32, dtype=torch.float64)
    conv = model.backbone.body[28]  # conv5_3, followed by an in-place ReLU
    for name, layer in (("backbone.body.28", conv), (None, model.backbone.body[29])):
        ours = explain(model, x, "gradcam", target=1, layer=name, normalize="none")
        model.eval()
        model.backbone.body[29].inplace = False  # Captum's hooks need it off, as ours switch it off
        ref = captum_attr.LayerGradCam(model, layer).attribute(x, target=1, relu_attributions=True).detach()
        model.backbone.body[29].inplace = True
        np.testing.assert_allclose(ours.raw, ref.reshape(1, 2, 2, 2).numpy(), rtol=1e-5, atol=1e-12)
    assert ours.options["layer"] == "backbone.body.29"
    sal = explain(model, x, "saliency", target=1, normalize="none")  # in-place ReLUs left as they are
    ref = captum_attr.Saliency(model.eval()).attribute(x, target=1, abs=True).detach()
    np.testing.assert_allclose(sal.raw, ref.amax(2).numpy(), rtol=1e-5, atol=1e-12)
    assert model.backbone.body[29].inplace is True


def test_guided_backprop_reaches_efficientnet_functional_relu6():
    # EfficientNet-Lite0's ReLU6 modules (which call hardtanh(0, 6)): stem 1, first block 1, 15 blocks
    # x 2, head 1, plus the CRNN head's ReLU: 34 activations must become guided. With gradients, as an
    # explanation runs (without, the backbone's folded copy runs, its convolutions fused with them).
    from xvad.explain.gradients import GuidedReLUs

    torch.manual_seed(0)
    model = CRNN("efficientnet_lite0", size=32, frames=1, hidden=8, precision="fp32").eval()
    guided = GuidedReLUs()
    with guided:
        model(torch.randn(1, 1, 3, 32, 32))
    assert guided.count == 34
    e = explain(model, torch.randn(1, 3, 32, 32), "guided_backprop", target=1)
    assert np.isfinite(e.maps).all()


# -- output --------------------------------------------------------------------------------------
def test_explanation_fields_single_and_batch(model64, clips64):
    single = explain(model64, clips64[0], "gradcam")
    assert isinstance(single, Explanation)
    assert single.maps.shape == (T, S, S) and single.raw.shape == (T, 8, 8)
    assert single.frame_importance.shape == (T,)
    assert single.maps.dtype == np.float32
    assert isinstance(single.score, float) and isinstance(single.target, int)
    assert single.class_name == model64.classes[single.target]
    model64.eval()
    with torch.no_grad():
        p = model64(clips64).softmax(1)
    assert single.target == int(p[0].argmax())
    assert single.score == pytest.approx(float(p[0].max()), rel=1e-6)
    batch = explain(model64, clips64, "gradcam", target="alert")
    assert batch.maps.shape == (B, T, S, S) and batch.frame_importance.shape == (B, T)
    assert list(batch.target) == [1, 1] and batch.class_name == ["alert", "alert"]
    np.testing.assert_allclose(batch.score, p[:, 1].numpy(), rtol=1e-6)
    parts = batch.unbatch()
    assert len(parts) == B and parts[1].maps.shape == (T, S, S) and parts[1].target == 1
    per_clip = explain(model64, clips64, "gradcam", target=[0, 1])
    assert list(per_clip.target) == [0, 1]


def test_normalisation_modes(model64, clips64):
    none = explain(model64, clips64, "gradcam", target=1, normalize="none")
    up = F.interpolate(torch.from_numpy(none.raw).reshape(B * T, 1, 8, 8), size=(S, S), mode="bilinear",
                       align_corners=False).reshape(B, T, S, S).numpy()
    np.testing.assert_allclose(none.maps, up, rtol=1e-6, atol=1e-9)
    clip = explain(model64, clips64, "gradcam", target=1, normalize="clip")
    lo, hi = up.min((1, 2, 3), keepdims=True), up.max((1, 2, 3), keepdims=True)
    np.testing.assert_allclose(clip.maps, (up - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    frame = explain(model64, clips64, "gradcam", target=1, normalize="frame")
    lo, hi = up.min((2, 3), keepdims=True), up.max((2, 3), keepdims=True)
    np.testing.assert_allclose(frame.maps, (up - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert np.allclose(frame.maps.max((2, 3)), 1)
    assert clip.maps.max((2, 3)).min() < 0.99  # a frame that mattered less stays fainter


def test_integrated_gradients_sign_option(model64, clips64):
    full = explain(model64, clips64[0], "integrated_gradients", steps=4, normalize="none", sign="all")
    pos = explain(model64, clips64[0], "integrated_gradients", steps=4, normalize="none")
    neg = explain(model64, clips64[0], "integrated_gradients", steps=4, normalize="none", sign="negative")
    assert full.raw.min() < 0 < full.raw.max()
    np.testing.assert_allclose(pos.maps, np.clip(full.maps, 0, None), atol=1e-7)
    assert (pos.maps >= 0).all() and (neg.maps >= 0).all()


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call,words", [
    (lambda m: explain(m, torch.randn(3, S, S)), ["[T, 3, H, W]", "[3, 32, 32]"]),
    (lambda m: explain(m, torch.randn(1, 2, T, 3, S, S)), ["[B, T, 3, H, W]"]),
    (lambda m: explain(m, torch.randn(T, 4, S, S)), ["[T, 3, H, W]", "4"]),
    (lambda m: explain(m, torch.zeros(T, 3, S, S, dtype=torch.uint8)), ["float"]),
    (lambda m: explain(m, [1, 2, 3]), ["tensor"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), target=2), ["0..1", "normal", "alert"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), target=-1), ["0..1"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), target="fire"), ["0..1", "alert"]),
    (lambda m: explain(m, torch.randn(2, T, 3, S, S), target=[0, 1, 1]), ["batch of 2"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), layer="backbone.body.99"),
     ["body.99", "backbone.body.6", "backbone.body.7"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="gradcam+++"), ["gradcam++", "saliency", "occlusion"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), normalize="max"), ["clip", "frame", "none"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), pooling="time"), ["frame", "clip"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="layercam", pooling="clip"), ["layercam", "layer"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="saliency", steps=3), ["saliency", "steps"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="integrated_gradients", baseline="grey"), ["black"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="integrated_gradients", steps=0), ["steps"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="smoothgrad", noise=-1), ["noise"]),
    (lambda m: explain(m, torch.randn(T, 3, S, S), method="occlusion", span=T + 1), ["span"]),
])
def test_bad_input_raises_one_line(call, words):
    model = make_model(double=False)
    with pytest.raises(ExplainError) as info:
        call(model)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    for word in words:
        assert word in message, (word, message)
    assert isinstance(info.value, ValueError)


# -- sanity check and faithfulness mechanics (untrained model; the quality tests train one) ---------
def test_sanity_check_leaves_the_model_alone_and_names_stages(vgg64):
    model = make_model(double=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(T, 3, S, S)
    result = sanity_check(model, x, methods=("gradcam", "saliency"))
    assert result["stages"] == ["head", "gru", "+ backbone body.6 (8x8)", "+ backbone body.3 (16x16)",
                                "+ backbone body.0 (32x32)"]
    assert all(len(v) == 5 for v in result["spearman"].values())
    assert "randomised" in result["table"] and "gradcam" in result["table"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    frame = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    names = [name for name, _ in randomisation_stages(vgg64, frame)]
    assert len(names) == 2 + 5 and names[2].endswith("(2x2)") and names[-1].endswith("(32x32)")
    layers = randomisation_stages(vgg64, frame, granularity="layer")
    assert len(layers) == 2 + 13


def test_faithfulness_curves_and_checks():
    model = make_model(double=False)
    x = torch.randn(T, 3, S, S)
    r = faithfulness(model, x, method="saliency", n_steps=4, baseline="mean")
    fractions, probs = r.curves["deletion"]
    assert len(fractions) == 5 and fractions[0] == 0 and fractions[-1] == 1
    assert probs[0] == pytest.approx(r.score, abs=1e-6)
    # fully deleted == fully baseline == the start of insertion
    assert probs[-1] == pytest.approx(r.curves["insertion"][1][0], abs=1e-6)
    assert r.curves["temporal_deletion"][0].shape == (T + 1,)
    assert "deletion" in str(r)
    with pytest.raises(ExplainError, match="one clip"):
        faithfulness(model, torch.randn(2, T, 3, S, S))
    with pytest.raises(ExplainError, match="baseline"):
        faithfulness(model, x, baseline="noise")


# -- metrics helpers -----------------------------------------------------------------------------
def test_spearman_ranks_and_scipy():
    np.testing.assert_array_equal(rank(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 200).astype(float)
    b = a + rng.integers(0, 4, 200)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)


def test_localisation_metrics_on_hand_made_maps():
    maps = np.zeros((3, 10, 10))
    maps[0, 2, 3] = 1.0   # inside box (x 2..5, y 1..4)
    maps[1, 8, 8] = 1.0   # outside
    maps[1, 2, 3] = 0.5
    boxes = [(2, 1, 5, 4), (2, 1, 5, 4), None]
    assert pointing_game(maps, boxes) == 0.5
    assert pointing_game(maps, boxes, tolerance=5) == 1.0
    assert energy_in_box(maps, boxes) == pytest.approx((1.0 + 0.5 / 1.5) / 2)
    assert box_area_share(boxes, (10, 10)) == pytest.approx(0.09)
    assert pointing_game(np.zeros((1, 4, 4)), [(0, 0, 2, 2)]) == 0.0  # a flat map points nowhere
    assert localisation(maps, boxes, min_peak=0.1)["frames"] == 2
    faint = maps.copy()
    faint[1] *= 0.05  # frame 1 now peaks below 10% of the clip's peak: left out
    assert localisation(faint, boxes, min_peak=0.1)["frames"] == 1
    assert pointing_game(faint, boxes, min_peak=0.1) == 1.0
    report = localisation(np.stack([maps, maps]), [boxes, boxes])
    assert report["frames"] == 4 and report["pointing_game"] == 0.5
    assert report["box_area_share"] == pytest.approx(0.09)
