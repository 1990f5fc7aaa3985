"""Model shapes, backbone weight loading (offline), precision handling."""
import hashlib
import os

import pytest
import torch

from xvad.models import CRNN, WeightsError, backbones, build_backbone
from xvad.models.precision import resolve_precision


def torchvision_vgg19_names():
    """torchvision's vgg19 state-dict names and shapes, written out by hand from its config."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
    shapes, idx, cin = {}, 0, 3
    for c in cfg:
        if c == "M":
            idx += 1
            continue
        shapes[f"features.{idx}.weight"] = (c, cin, 3, 3)
        shapes[f"features.{idx}.bias"] = (c,)
        idx += 2
        cin = c
    for i, (o, n) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096))):
        shapes[f"classifier.{i}.weight"] = (o, n)
        shapes[f"classifier.{i}.bias"] = (o,)
    return shapes


def fake_vgg19_file(folder, name=None):
    """A vgg19 checkpoint with torchvision's names and shapes, each tensor a constant (stride-0, tiny on disk)."""
    sd = {k: torch.full((1,), float(i)).expand(s) for i, (k, s) in enumerate(torchvision_vgg19_names().items())}
    path = os.path.join(folder, "vgg19-tmp.pth")
    torch.save(sd, path)
    if name is None:  # name it the way torch.hub expects: <name>-<sha256 prefix>.pth
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:8]
        name = f"vgg19-{digest}.pth"
    final = os.path.join(folder, name)
    os.replace(path, final)
    return final, sd


def test_crnn_shapes_and_classes():
    m = CRNN("tiny", num_classes=3, size=32, frames=4, classes=["normal", "fight", "gunshot"])
    x = torch.randn(2, 4, 3, 32, 32)
    assert m(x).shape == (2, 3)
    assert m.features(x).shape == (2, 4, 64)
    assert m.classes == ["normal", "fight", "gunshot"]
    assert m.config["frames"] == 4 and m.config["size"] == 32


@pytest.mark.parametrize("pooling,dim", [("avg", 64), ("max", 64), ("flatten", 64 * 8 * 8)])
def test_pooling(pooling, dim):
    m = CRNN("tiny", size=32, pooling=pooling, precision="fp32").eval()
    assert m.feature_dim == dim
    x = torch.randn(1, 3, 3, 32, 32)
    assert m(x).shape == (1, 2)
    with torch.no_grad():
        fmap = m.backbone(x[0])                                       # [3, 64, 8, 8], frame by frame
        feats = m.features(x)[0]
    by_hand = {"avg": fmap.sum((2, 3)) / 64, "max": fmap.flatten(2).max(2).values,
               "flatten": torch.stack([torch.cat([fmap[t, c].flatten() for c in range(64)]) for t in range(3)])}
    torch.testing.assert_close(feats, by_hand[pooling], rtol=1e-5, atol=1e-6)


def test_pool_head_by_hand():
    """temporal="pool": logits = W @ standardise([mean_t, max_t]) + b, with the batch norm's running
    statistics in eval mode; checked with numbers written out here rather than the model's code."""
    m = CRNN("tiny", size=32, temporal="pool", input="motion", classes=["normal", "fight"]).eval()
    assert m.gru is None and m.config["temporal"] == "pool" and m.config["input"] == "motion"
    feats = torch.tensor([[[1.0, 4.0], [3.0, 0.0], [2.0, 2.0]]])   # one clip, T=3, D=2 (first two dims)
    feats = torch.cat([feats, torch.zeros(1, 3, m.feature_dim - 2)], dim=2)
    norm, linear = m.head[0], m.head[-1]
    with torch.no_grad():
        norm.running_mean.zero_()
        norm.running_mean[:2] = torch.tensor([1.0, 1.0])              # means of dims 0, 1
        norm.running_mean[m.feature_dim] = 2.0                        # max of dim 0
        norm.running_var.fill_(4.0 - norm.eps)                        # sd 2 everywhere
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([0.5, -0.5]))
        linear.weight[1, 0] = 1.0                                     # mean of dim 0: 2 -> (2-1)/2 = 0.5
        linear.weight[1, 1] = 2.0                                     # mean of dim 1: 2 -> (2-1)/2 = 0.5
        linear.weight[1, m.feature_dim] = 3.0                         # max of dim 0: 3 -> (3-2)/2 = 0.5
        linear.weight[0, m.feature_dim + 1] = -1.0                    # max of dim 1: 4 -> (4-0)/2 = 2
    torch.testing.assert_close(m.classify(feats), torch.tensor([[0.5 - 2.0, -0.5 + 0.5 + 1.0 + 1.5]]))


def test_pool_head_trains_in_batches_and_checks_options():
    m = CRNN("tiny", size=32, frames=4, temporal="pool").train()
    logits = m(torch.randn(3, 4, 3, 32, 32))
    logits.sum().backward()
    assert m.head[-1].weight.grad is not None and m.backbone.training is False
    for bad in (dict(temporal="lstm"), dict(input="depth"), dict(input="motion+motion"), dict(pooling="median")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            CRNN("tiny", size=32, **bad)


def test_two_streams_share_the_backbone_and_average_probabilities():
    """motion+flow: each frame's two images go through the one backbone; each stream has its own pool
    head, and the clip's probabilities are the mean of the two heads' (checked by hand)."""
    torch.manual_seed(0)
    m = CRNN("tiny", size=32, frames=4, input="motion+flow", temporal="pool", precision="fp32").eval()
    single = CRNN("tiny", size=32, frames=4, temporal="pool", precision="fp32").eval()
    single.backbone.load_state_dict(m.backbone.state_dict())
    x = torch.randn(2, 4, 6, 32, 32)
    feats = m.features(x)
    d = single.feature_dim
    assert m.streams == 2 and feats.shape == (2, 4, 2 * d)
    torch.testing.assert_close(feats[..., :d], single.features(x[:, :, :3]))     # stream 1: channels 0-2
    torch.testing.assert_close(feats[..., d:], single.features(x[:, :, 3:]))     # stream 2: channels 3-5
    with torch.no_grad():
        for head in m.head:
            head[-1].weight.normal_()
    probs = []
    for k, head in enumerate(m.head):
        f = feats[..., k * d:(k + 1) * d]
        probs.append(head(torch.cat([f.mean(1), f.amax(1)], 1)).softmax(-1))
    torch.testing.assert_close(m(x).softmax(-1), (probs[0] + probs[1]) / 2)
    assert not torch.allclose(probs[0], probs[1])
    assert m.stream_heads == ["motion", "flow"] and single.stream_heads == []
    torch.testing.assert_close(m.stream_proba(x), torch.stack(probs, 1))          # each stream's own
    torch.testing.assert_close(m.stream_proba(x[0]), torch.stack(probs, 1)[0])    # one clip
    torch.testing.assert_close(single.stream_proba(x[:, :, :3]), single.predict_proba(x[:, :, :3])[:, None])
    with pytest.raises(ValueError, match="mixes its streams"):
        CRNN("tiny", size=32, frames=4, input="motion+flow", temporal="gru").stream_proba(x)
    with pytest.raises(ValueError, match=r"\[B, T, 6, H, W\]"):
        m(torch.randn(1, 4, 3, 32, 32))


def test_time_distributed_is_one_backbone_call_and_matches_per_frame_loop():
    m = CRNN("tiny", size=32, precision="fp32").eval()
    calls = []
    m.backbone.register_forward_hook(lambda mod, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(2, 5, 3, 32, 32)
    with torch.no_grad():
        feats = m.features(x)
    assert calls == [10]
    with torch.no_grad():  # reference: each frame through the backbone on its own
        ref = torch.stack([torch.stack([m.backbone(x[b, t:t + 1]).mean((2, 3))[0] for t in range(5)])
                           for b in range(2)])
    torch.testing.assert_close(feats, ref, rtol=1e-5, atol=1e-5)


def test_frozen_backbone_has_no_grads_and_stays_in_eval():
    m = CRNN("tiny", size=32)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    m.train()
    assert not m.backbone.training and m.gru.training
    m.freeze_backbone(False).train()
    assert all(p.requires_grad for p in m.backbone.parameters()) and m.backbone.training


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        CRNN("tiny", size=32)(torch.randn(4, 3, 32, 32))


def test_vgg19_loads_torchvision_names_strictly(tmp_path):
    path, sd = fake_vgg19_file(str(tmp_path), "vgg19-local.pth")
    bb = build_backbone("vgg19", weights=path)
    names = list(torchvision_vgg19_names())
    # the backbone keeps the conv features: every features.* tensor came from the file
    assert torch.all(bb.body[0].weight == names.index("features.0.weight"))
    assert torch.all(bb.body[34].bias == names.index("features.34.bias"))
    assert bb.info.cam_layer == "body.35"  # conv5_4's ReLU


def test_vgg19_strict_load_rejects_a_wrong_file(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(WeightsError, match="do not match"):
        build_backbone("vgg19", weights=str(path))


def test_imagenet_weights_through_torch_hub_with_hash(tmp_path, monkeypatch):
    """weights='imagenet' goes through torch.hub's download + hash check + cache; here from a file URL."""
    src = tmp_path / "server"
    src.mkdir()
    path, _ = fake_vgg19_file(str(src))
    monkeypatch.setitem(backbones.VGG_URLS, "vgg19", f"file://{path}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    bb = build_backbone("vgg19", weights="imagenet")
    assert torch.all(bb.body[2].weight == 2)
    cached = tmp_path / "hub" / "hub" / "checkpoints" / os.path.basename(path)
    assert cached.is_file()


def test_imagenet_hash_mismatch_is_refused(tmp_path, monkeypatch):
    path, _ = fake_vgg19_file(str(tmp_path), "vgg19-deadbeef.pth")
    monkeypatch.setitem(backbones.VGG_URLS, "vgg19", f"file://{path}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="could not download"):
        build_backbone("vgg19", weights="imagenet")


def test_offline_download_error_names_url_and_local_option(tmp_path, monkeypatch):
    url = f"file://{tmp_path}/missing/vgg19-dcbb9e9d.pth"
    monkeypatch.setitem(backbones.VGG_URLS, "vgg19", url)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(WeightsError) as e:
        build_backbone("vgg19", weights="imagenet")
    msg = str(e.value)
    assert url in msg and "--weights" in msg and "\n" not in msg


def test_missing_and_foreign_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("vgg16", weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        build_backbone("vgg16", weights=str(junk))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet9000")


def test_precision_resolution():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError):
        resolve_precision("fp8", "cpu")


def test_bf16_close_to_fp32_on_tiny_model():
    torch.manual_seed(0)
    m = CRNN("tiny", size=32).eval()
    x = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        a = m.set_precision("fp32")(x)
        b = m.set_precision("bf16")(x)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
    # the logits are small, so compare where bf16 acts: the backbone runs in bf16, within its rounding
    frames = x.flatten(0, 1)
    with torch.no_grad():
        full = m.set_precision("fp32").feature_maps(frames)
        half = m.set_precision("bf16").feature_maps(frames)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    err = float((half.float() - full).abs().max())
    assert 0 < err <= 0.02 * float(full.abs().max())


def test_float64_model_runs_end_to_end():
    torch.manual_seed(0)
    m = CRNN("tiny", size=32, precision="fp32").eval()
    x = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        single = m(x)
        double = m.double()(x.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double, single.double(), rtol=1e-5, atol=1e-6)   # the same model, more digits


def test_norm_eps_floors_the_pooled_heads_scaling(tmp_path):
    """A feature constant in training (running variance 0) is divided by sqrt(norm_eps), not by
    sqrt(1e-5); the floor travels with the checkpoint."""
    from xvad.checkpoint import load_model, save_model

    m = CRNN("tiny", size=32, frames=4, temporal="pool", precision="fp32", norm_eps=0.1).eval()
    bn = m.head[0]
    with torch.no_grad():
        bn.running_mean.zero_()
        bn.running_var.zero_()
    z = torch.full((1, bn.num_features), 2.0)
    torch.testing.assert_close(bn(z), z / 0.1 ** 0.5)
    assert load_model(save_model(m, str(tmp_path / "m.pt"))).head[0].eps == 0.1
    assert CRNN("tiny", size=32, temporal="pool").head[0].eps == 1e-5   # batch norm's own default
    with pytest.raises(ValueError, match="norm_eps"):
        CRNN("tiny", size=32, norm_eps=0)


def test_norm_clamp_bounds_each_standardised_feature(tmp_path):
    """norm_clamp=3: (x - mean) / sd, then clamped to [-3, 3] (by hand); the bound travels with the
    checkpoint, and the head's state dict keeps the keys of a plain batch norm."""
    from xvad.checkpoint import load_model, save_model

    m = CRNN("tiny", size=32, frames=4, temporal="pool", precision="fp32", norm_clamp=3.0).eval()
    bn = m.head[0]
    with torch.no_grad():
        bn.running_mean.fill_(1.0)
        bn.running_var.fill_(4.0)
    z = torch.tensor([[21.0, -19.0, 3.0] + [1.0] * (bn.num_features - 3)])
    expected = ((z - 1.0) / (4.0 + 1e-5) ** 0.5).clamp(-3, 3)
    torch.testing.assert_close(bn(z), expected)
    assert bn(z)[0, :3].tolist() == pytest.approx([3.0, -3.0, 1.0], abs=1e-5)
    assert load_model(save_model(m, str(tmp_path / "m.pt"))).head[0].bound == 3.0
    assert set(bn.state_dict()) == set(torch.nn.BatchNorm1d(4, affine=False).state_dict())
    with pytest.raises(ValueError, match="norm_clamp"):
        CRNN("tiny", size=32, norm_clamp=-1)



@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_folded_backbone_computes_the_same_features_and_gradients_stay_eager(precision):
    """Inference runs the backbone with its batch norms folded into the convolutions: the same
    function (fp32: to 1e-5 of the features' range; bf16: to its rounding, as close to fp32 as the
    eager bf16 features are). With a gradient wanted the original modules run; weights loaded later
    are folded again; a copy of the model folds its own."""
    import copy

    from xvad.models.fold import fold_batch_norms

    torch.manual_seed(0)
    m = CRNN("efficientnet_lite0", weights="imagenet", input="motion", temporal="pool", size=64,
             frames=4, precision=precision).eval()
    frames = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        exact = m.backbone(frames)                       # fp32, eager
        folded = m.feature_maps(frames).float()          # folded, at the model's precision
        copy_fp32 = fold_batch_norms(m.backbone)(frames)
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in fold_batch_norms(m.backbone).modules())
    torch.testing.assert_close(copy_fp32, exact, rtol=0, atol=1e-5 * float(exact.abs().max()))
    cos = torch.nn.functional.cosine_similarity(folded.flatten(1), exact.flatten(1))
    assert float(cos.min()) > (0.99999 if precision == "fp32" else 0.995)
    x = frames[:2].clone().requires_grad_(True)
    m.feature_maps(x).float().sum().backward()       # eager modules: gradients flow
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with torch.no_grad():
        m.backbone.body.net._bn1.bias.add_(1.0)      # new weights (as a loaded checkpoint): folded again
        again = m.feature_maps(frames).float()
        twin = copy.deepcopy(m).feature_maps(frames).float()
        eager = m.backbone(frames)
    assert float((again - folded).abs().max()) > 0.9
    assert float(torch.nn.functional.cosine_similarity(again.flatten(1), eager.flatten(1)).min()) > 0.995
    torch.testing.assert_close(twin, again)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_convolutions_and_activations_match_the_two_ops(precision, monkeypatch):
    """The folded copy fuses each convolution with the ReLU6 after it (33 in EfficientNet-Lite0: stem,
    head, the first block's depthwise and 2 in each of the 15 others); on the CPU one oneDNN call
    must give what the convolution and the clamp give as two ops (fp32: to float rounding; bf16:
    both round the same fp32 sums, and the clamp commutes with the rounding)."""
    from xvad.models import fold

    torch.manual_seed(0)
    m = CRNN("efficientnet_lite0", weights="imagenet", input="motion", temporal="pool", size=64,
             frames=4, precision=precision).eval()
    copy = fold.fold_batch_norms(m.backbone)
    assert sum(isinstance(x, fold.ConvReLU6) for x in copy.modules()) == 33
    frames = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        fused = m.feature_maps(frames).float()
        monkeypatch.setattr(fold, "_FUSED", None)        # the same copy, the two ops
        apart = m.feature_maps(frames).float()
        plain = m.backbone(frames).float()               # eager, fp32, no copy at all
    tol = 1e-5 if precision == "fp32" else 1e-2
    torch.testing.assert_close(fused, apart, rtol=0, atol=tol * float(apart.abs().max()))
    if precision == "fp32":
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5 * float(plain.abs().max()))


@pytest.mark.parametrize("channels_last", [False, True])
def test_same_padding_at_inference_is_zeros_on_the_bottom_and_right(channels_last):
    """Without gradients SAME's uneven padding is built by hand (only the new row and column zeroed):
    it must be F.pad's, and the convolution's output the same as with gradients."""
    import torch.nn.functional as F

    from xvad.models.efficientnet import SameConv2d

    torch.manual_seed(0)
    for size, kernel in ((16, 3), (15, 3), (16, 5), (16, 1)):
        conv = SameConv2d(4, 4, kernel, stride=2, groups=4, bias=False)
        x = torch.randn(2, 4, size, size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        expected = conv(x)                                # with gradients: F.pad
        with torch.no_grad():
            padded, padding = conv.padded(x)
            got = conv(x)
        if padding == (0, 0) and padded.shape != x.shape:
            total = padded.shape[-1] - size
            torch.testing.assert_close(padded, F.pad(x, [total // 2, total - total // 2] * 2), rtol=0, atol=0)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_inference_runs_the_backbone_in_chunks_with_the_same_features(monkeypatch):
    """Without gradients, frame features come from calls of at most CHUNK_PIXELS input pixels; they
    must be those of one call over every frame (the grad path), in order."""
    from xvad.models import crnn

    torch.manual_seed(0)
    m = CRNN("tiny", size=32, frames=4, input="motion+flow", precision="fp32").eval()
    frames = torch.rand(7, 6, 32, 32)
    calls = []
    original = m.feature_maps
    monkeypatch.setattr(m, "feature_maps", lambda x: calls.append(len(x)) or original(x))
    monkeypatch.setattr(crnn, "CHUNK_PIXELS", 3 * 32 * 32)
    with torch.no_grad():
        chunked = m.frame_features(frames)
    assert calls == [3, 3, 3, 3, 2]                       # 14 images (2 streams) in calls of 3
    calls.clear()
    whole = m.frame_features(frames).detach()            # gradients on: one call
    assert calls == [14]
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_keep_freed_memory_serves_big_blocks_from_the_heap(tmp_path):
    """After keep_freed_memory a 16 MiB malloc comes from the heap, not a fresh mapping (glibc's own
    accounting, mallinfo2: bytes in mmapped blocks); in a process that did not call it, it is mapped."""
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(
        "import ctypes, sys\n"
        "from xvad.models.allocator import keep_freed_memory\n"
        "class Info(ctypes.Structure):\n"
        "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena ordblks smblks hblks hblkhd usmblks '\n"
        "                                             'fsmblks uordblks fordblks keepcost').split()]\n"
        "libc = ctypes.CDLL(None)\n"
        "if not hasattr(libc, 'mallinfo2'):\n"
        "    print('no-glibc'); sys.exit()\n"
        "libc.mallinfo2.restype = Info\n"
        "libc.malloc.restype = ctypes.c_void_p\n"
        "kept = keep_freed_memory() if sys.argv[1] == 'keep' else False\n"
        "before = libc.mallinfo2().hblkhd\n"
        "block = libc.malloc(16 << 20)\n"
        "print(kept, libc.mallinfo2().hblkhd - before >= 16 << 20)\n")
    out = {how: subprocess.run([sys.executable, str(script), how], capture_output=True, text=True,
                               check=True).stdout.split() for how in ("keep", "default")}
    if out["keep"] == ["no-glibc"]:
        pytest.skip("the C library is not glibc (no mallinfo2)")
    assert out["keep"] == ["True", "False"]               # from the heap
    assert out["default"] == ["False", "True"]            # mapped
