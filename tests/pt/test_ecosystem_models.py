"""The models people bring: timm, torchvision and Hugging Face architectures (random weights, nothing
downloaded, norms with non-trivial running statistics), each analyzed and put through every rewrite. A
rewrite checks itself in float64 on the example and a seeded probe; here each also accounts for every norm
of the model (folded, or named under its path with a reason), and ``reparameterize`` (norms folded and
``merge_branches`` run until nothing changes) is held to timm's own ``reparameterize_model`` on every family
timm can re-parameterize."""
import pytest
import torch
from torch import nn

from onebyone import OneByOneError, analyze
from onebyone.torch import (
    fold_batchnorm,
    linear_to_conv1x1,
    merge_branches,
    merge_pointwise,
    optimize,
    reparameterize,
)

from . import ecosystem
from .cpus import REWRITES
from .ecosystem import norm_sites, randomize_norms, silent_sites

timm = ecosystem.load("timm")
tv = ecosystem.load("torchvision")
T = pytest.importorskip("transformers")

# name -> (input size, create_model keywords): 32 x 32 where a model takes it
TIMM = {
    "resnet18d": (32, {}), "efficientnet_b0": (32, {}), "mobilenetv3_small_050": (32, {}),
    "mobilenetv4_conv_small": (32, {}), "regnety_002": (32, {}), "convnext_atto": (32, {}),
    "densenet121": (32, {}), "ghostnet_050": (32, {}), "rexnet_100": (32, {}), "hgnetv2_b0": (32, {}),
    "levit_128s": (32, {"img_size": 32}), "efficientvit_m0": (32, {"img_size": 32}), "fastvit_t8": (32, {}),
    "repvgg_a0": (32, {}), "mobileone_s0": (32, {}), "repghostnet_050": (32, {}), "repvit_m0_9": (32, {}),
    "tiny_vit_5m_224": (32, {}), "mobilevit_xxs": (32, {}),
    "coatnet_nano_rw_224": (32, {"img_size": 32}), "maxvit_nano_rw_256": (32, {"img_size": 32}),
    "swin_tiny_patch4_window7_224": (32, {"img_size": 32, "window_size": 4}),
    "deit_tiny_patch16_224": (32, {"img_size": 32}), "mixer_s16_224": (32, {"img_size": 32}),
    "resmlp_12_224": (32, {"img_size": 32}), "poolformer_s12": (32, {}), "edgenext_xx_small": (32, {}),
    "nf_regnet_b0": (32, {}), "shvit_s1": (32, {}), "ghostnetv3_050": (64, {}), "lcnet_050": (32, {}),
    "nextvit_small": (64, {}), "efficientvim_m1": (64, {}), "iformer_t": (64, {}),
    # 107 folds past 1e-6 of the scale in float32 alone; norms on pieces of a split, a 5-D table; F.linear on a
    # child's weight
    "efficientnetv2_rw_t": (32, {}), "lambda_resnet26t": (64, {"img_size": 64}),
    "eva02_tiny_patch14_224": (28, {"img_size": 28}),
}
# torchvision's EfficientNet and DenseNet are left to timm's (the same architectures); their modules
# (Conv2dNormActivation, SqueezeExcitation, StochasticDepth) run here in mobilenet_v3_large and convnext_tiny
FROZEN = lambda: tv.models.resnet50(norm_layer=tv.ops.FrozenBatchNorm2d)  # noqa: E731 - detection backbones' norm
TORCHVISION = {
    "resnet50_frozen_bn": (32, FROZEN), "mobilenet_v3_large": (32, lambda: tv.models.mobilenet_v3_large()),
    "regnet_y_400mf": (32, tv.models.regnet_y_400mf), "shufflenet_v2_x0_5": (32, tv.models.shufflenet_v2_x0_5),
    "squeezenet1_1": (32, tv.models.squeezenet1_1), "convnext_tiny": (32, tv.models.convnext_tiny),
    "vit_small": (32, lambda: tv.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                          hidden_dim=32, mlp_dim=64)),
    "fcn_resnet50": (32, lambda: tv.models.segmentation.fcn_resnet50(weights_backbone=None, aux_loss=False)),
    "lraspp_mobilenet_v3_large": (32, lambda: tv.models.segmentation.lraspp_mobilenet_v3_large(
        weights_backbone=None)),
    "r3d_18": ((3, 4, 32, 32), tv.models.video.r3d_18),
}


def build(source: str, name: str):
    torch.manual_seed(0)
    if source == "timm":
        size, kw = TIMM[name]
        model = timm.create_model(name, pretrained=False, num_classes=10, **kw)
    else:
        size, make = TORCHVISION[name]
        model = make()
    shape = (1, *size) if isinstance(size, tuple) else (1, 3, size, size)
    return randomize_norms(model), torch.randn(shape, generator=torch.Generator().manual_seed(2))


# the families timm re-parameterizes itself (a reparameterize() or fuse() method): where ours stands
REPARAM = ["repvgg_a0", "mobileone_s0", "repghostnet_050", "repvit_m0_9", "efficientvit_m0", "levit_128s",
           "tiny_vit_5m_224", "shvit_s1", "ghostnetv3_050", "fastvit_t8", "nextvit_small", "efficientvim_m1",
           "iformer_t"]


def convs_and_norms(model) -> int:
    return sum(isinstance(m, (nn.Conv1d, nn.Conv2d)) or isinstance(getattr(m, "running_mean", None), torch.Tensor)
               for m in model.modules())


# reparameterize against timm's only (test_a_heavy_...): GhostNetV3 has 635 convs and norms; the others are
# families held to timm's level whose other rewrites the per-model loop's models already cover (MobileOne's
# branches are RepVGG's and RepGhost's kind)
HEAVY = {"ghostnetv3_050", "nextvit_small", "efficientvim_m1", "iformer_t", "mobileone_s0"}
MODELS = [("timm", n) for n in TIMM if n not in HEAVY] + [("torchvision", n) for n in TORCHVISION]


@pytest.mark.parametrize("source,name", MODELS, ids=[f"{s}:{n}" for s, n in MODELS])
def test_every_rewrite_is_exact_and_names_every_norm(source, name):
    model, x = build(source, name)
    s = analyze(model, example=x)
    assert s.params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.rows)
    assert s.macs > 0 and s.uncounted == []
    sites = norm_sites(model, x)
    folded, report = fold_batchnorm(model, example=x)
    assert silent_sites(report, sites) == [], report.skipped
    assert all("None" not in why for _, why in report.skipped)
    assert len(report.changed) + len(report.skipped) >= len(sites)
    assert len(norm_sites(folded, x)) == len(sites) - len(report.changed)  # each fold removed one norm
    for rewrite in (reparameterize, merge_pointwise, linear_to_conv1x1):  # reparameterize runs merge_branches
        new, r = rewrite(model, example=x)  # each raises past its tolerance
        assert r.max_abs_diff <= r.tolerance and r.macs_after <= r.macs_before
        assert all(isinstance(n, str) and n and why and "None" not in why for n, why in r.skipped)
        if rewrite is reparameterize:  # every norm folded, merged into a conv by path, or named
            assert silent_sites(r, sites) == [], r.skipped
        if rewrite is reparameterize and source == "timm" and name in REPARAM:
            at_timms_level(model, new, r)


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_a_heavy_reparameterizable_model_reaches_timms_level(name):
    model, x = build("timm", name)
    ours, report = reparameterize(model, example=x)  # checks itself on the example and a random probe
    at_timms_level(model, ours, report)


def at_timms_level(model, ours, report):
    """``ours`` (reparameterize's) is no larger than timm's ``reparameterize_model`` of ``model``: parameters, and
    convs + norms."""
    from timm.utils.model import reparameterize_model

    theirs = reparameterize_model(model)  # inplace=False: a copy
    assert sum(p.numel() for p in ours.parameters()) <= sum(p.numel() for p in theirs.parameters())
    assert convs_and_norms(ours) <= convs_and_norms(theirs) < convs_and_norms(model)
    assert report.changed


def test_fastvit_repmixer_difference_and_layer_scale_merge():
    """FastViT's RepMixer computes x + layer_scale * (mixer(x) - norm(x)): a difference of branches scaled per
    channel, which merges into one depthwise conv per block as timm's own reparameterize() does."""
    model, x = build("timm", "fastvit_t8")
    ours, report = reparameterize(model, example=x)
    mixers = [n for n, m in model.named_modules() if type(m).__name__ == "RepMixer"]
    assert mixers and not [n for n, _ in report.skipped if n.endswith("token_mixer.norm.identity")]
    assert sum("scaled" in c for c in report.changed) == len(mixers)


def test_where_a_merge_stops_the_sum_is_named_with_its_reason():
    class Gated(nn.Module):  # x * sigmoid(x) in one branch: no linear map of x
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.conv(x) - 0.5 * (x * torch.sigmoid(x))

    model, x = Gated().eval(), torch.randn(1, 4, 6, 6)
    ours, report = reparameterize(model, example=x)
    assert not report.changed and len(report.skipped) == 1
    assert "read different tensors" in report.skipped[0][1] and "None" not in report.skipped[0][1]


def test_a_block_timm_never_saw_is_reparameterized():
    class Block(nn.Module):  # three branches and a shortcut through a norm, no method to fuse them
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
            self.b = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
            self.c = nn.Sequential(nn.Conv2d(8, 8, (1, 3), padding=(0, 1), bias=False), nn.BatchNorm2d(8))
            self.skip = nn.BatchNorm2d(8)

            self.gamma = nn.Parameter(torch.rand(8, 1, 1) + 0.5)

        def forward(self, x):  # a difference of branches, scaled per channel (a layer scale), plus the input
            return torch.relu(x + self.gamma * (self.a(x) + self.b(x) + self.c(x) - self.skip(x)))

    model = randomize_norms(nn.Sequential(Block(), Block()))
    x = torch.randn(2, 8, 9, 9)
    ours, report = reparameterize(model, example=x)
    assert sum(isinstance(m, nn.Conv2d) for m in ours.modules()) == 2 and convs_and_norms(ours) == 2
    with torch.no_grad():
        assert (ours(x) - model(x)).abs().max() <= 1e-4 * float(model(x).abs().max())


def test_frozen_and_activation_norms_fold_and_keep_their_activation():
    """torchvision's FrozenBatchNorm2d is no _BatchNorm; timm's BatchNormAct2d runs the activation too."""
    model, x = build("torchvision", "resnet50_frozen_bn")
    folded, report = fold_batchnorm(model, example=x)
    assert len(report.changed) == 53 and report.skipped == []
    assert not any(isinstance(m, tv.ops.FrozenBatchNorm2d) for m in folded.modules())
    model, x = build("timm", "efficientnet_b0")
    folded, report = fold_batchnorm(model, example=x)
    assert len(report.changed) == 49 and report.skipped == []
    assert sum(isinstance(m, nn.SiLU) for m in folded.modules()) == sum(isinstance(m, nn.SiLU)
                                                                        for m in model.modules())


def test_norms_that_are_not_folded_keep_their_own_class():
    """A frozen norm left where it is stays frozen: the user's module, not an nn.BatchNorm2d in its place."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), tv.ops.FrozenBatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1))
    model = randomize_norms(model)
    folded, report = fold_batchnorm(model, example=torch.randn(1, 3, 8, 8))
    assert [n for n, _ in report.skipped] == ["2"] and isinstance(folded[2], tv.ops.FrozenBatchNorm2d)
    assert "reads `1` and is read by `3`" in report.skipped[0][1]


def test_levit_linear_norm_pairs_fold_and_fx_failures_are_not_raw():
    model, x = build("timm", "levit_128s")
    folded, report = fold_batchnorm(model, example=x)
    assert report.skipped == [] and len(report.changed) == len(norm_sites(model, x))
    for rewrite in (merge_pointwise,):
        new, r = rewrite(model, example=x)  # fx's ShapeProp fails on LeViT: merging says so, never raw
        assert any("torch.fx" in why for _, why in r.skipped) or r.changed
    opt, r = optimize(model, x, passes=REWRITES)
    with torch.no_grad():
        assert (opt(x) - model(x)).abs().max() <= 1e-4 * max(1.0, float(model(x).abs().max()))


def test_a_model_fx_cannot_trace_raises_no_raw_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.mean() > 100:  # data-dependent control flow
                return x
            return self.bn(self.conv(x))

    model, x = randomize_norms(Branchy()), torch.randn(1, 3, 5, 5)
    for rewrite in (fold_batchnorm, merge_branches, reparameterize, merge_pointwise):
        try:
            new, r = rewrite(model, example=x)
        except OneByOneError:
            continue
        with torch.no_grad():
            assert (new(x) - model(x)).abs().max() <= 1e-5 * max(1.0, float(model(x).abs().max()))


def test_the_cli_builds_timm_and_torchvision_names_at_their_published_size(capsys):
    import json

    from onebyone.cli import main
    from onebyone.zoo import from_spec

    assert main(["summary", "timm:mobilenetv3_small_050", "--json", "--model-arg", "num_classes=10"]) == 0
    s = json.loads(capsys.readouterr().out)
    model = timm.create_model("mobilenetv3_small_050", num_classes=10)
    assert s["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert s["rows"][0]["input_shape"][1:] == list(model.pretrained_cfg["input_size"])  # (3, 224, 224)
    model, size = from_spec("torchvision:squeezenet1_1", num_classes=10)
    assert size == (3, 224, 224) and model.classifier[1].out_channels == 10 and not model.training
    assert from_spec("torchvision:r3d_18")[1] == (3, 16, 112, 112)  # a clip: 16 frames of the published crop
    assert main(["summary", "timm:resnet181"]) == 2
    assert "timm has no model named 'resnet181'; close matches: resnet18" in capsys.readouterr().err
    assert main(["summary", "torchvision:resnet_18"]) == 2
    assert "close matches: resnet18" in capsys.readouterr().err


def test_a_library_that_is_missing_or_does_not_load_is_told_apart(monkeypatch):
    """``timm:NAME`` where timm is not installed asks for it; where it is installed but fails to import (a
    torchvision built for another torch), the error says so and why, rather than "install it"."""
    import importlib

    from onebyone.zoo import from_spec

    def missing(name, *a):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    def broken(name, *a):
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(OneByOneError, match=r"timm is not installed; install it \(pip install timm\)"):
        from_spec("timm:resnet18")
    monkeypatch.setattr(importlib, "import_module", lambda name, *a: missing("huggingface_hub.utils"))
    with pytest.raises(OneByOneError, match="timm imports huggingface_hub, which is not installed"):
        from_spec("timm:resnet18")
    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(OneByOneError, match="timm is installed but does not import beside torch .*torchvision::nms"):
        from_spec("timm:resnet18")


@pytest.mark.parametrize("name", ["tf_efficientnet_b0", "efficientnet_b1_pruned"])
def test_convs_that_pad_in_their_own_forward_are_counted_as_they_run(name):
    """timm's Conv2dSame pads the input inside its forward (TensorFlow's "same"): counted from the output it
    gives, its MACs equal PyTorch's FlopCounterMode, and a 64 x 64 input the model runs is not refused."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, x = timm.create_model(name, pretrained=False).eval(), torch.randn(1, 3, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    assert analyze(model, example=x).macs == fc.get_total_flops() // 2


@pytest.mark.parametrize("source,name", [("timm", "mobilenetv3_small_050"), ("torchvision", "shufflenet_v2_x0_5"),
                                         ("timm", "convnext_atto")])
def test_int8_on_a_model_people_bring_is_checked_and_what_is_kept_holds_on_new_batches(source, name):
    """optimize(dtype=torch.int8) on a real architecture: every conv and Linear listed with its error alone in
    int8, every form measured against float32 on held-out batches or named, and the form kept (if any) within
    dtype_tol on a batch of a size no calibration batch had (an engine's form quantizes again for it)."""
    model, x = build(source, name)
    g = torch.Generator().manual_seed(3)
    cal = [torch.randn((2, *x.shape[1:]), generator=g) for _ in range(4)]
    opt, report = optimize(model, cal[0], dtype=torch.int8, calibration=cal)
    p = report.precision
    runs = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert len(p["layers"]) == len(runs) and all(r["int8_alone_error"] is not None for r in p["layers"].values())
    named = set(p["forms"]) | {n for n, _ in report.skipped}
    assert {"torch int8 (x86)", "onnxruntime int8 (QDQ)", "OpenVINO int8 (NNCF)"} <= named
    assert p["forms"] and all(0 < f["relative_error"] for f in p["forms"].values())
    new = torch.randn((3, *x.shape[1:]), generator=g)
    with torch.no_grad():
        y, got = model(new), opt(new)
    if "kept" in p:
        assert p["forms"][p["kept"]]["relative_error"] <= p["tolerance"]
        assert (got - y).abs().max() <= p["tolerance"] * y.abs().max()
        assert sum(r["precision"] == "int8" for r in p["layers"].values()) > 0
    else:  # float32 kept, and said why
        assert torch.allclose(got, y, atol=1e-4 * float(y.abs().max()))
        assert any("float32 kept" in n for n in report.notes)


def test_timms_linear_is_taken_for_the_linear_it_computes():
    """timm's own ``Linear`` (the classifier of its MobileNetV3s, GhostNetV2, StarNet) overrides forward only to
    cast its weight when scripted: every rewrite left it alone as 'a forward of its own'."""
    head = nn.Sequential(nn.Flatten(), timm.layers.Linear(12, 5)).eval()
    x = torch.randn(2, 3, 2, 2)
    conv, report = linear_to_conv1x1(head, example=x)
    assert len(report.changed) == 1 and not report.skipped
    with torch.no_grad():
        assert torch.allclose(conv(x), head(x), atol=1e-6)
