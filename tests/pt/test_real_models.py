"""Real architectures nobody here wrote: Hugging Face vision models built from small configs (random
weights, nothing downloaded), torchvision and timm where they import. For each: the analyzer's MACs
equal PyTorch's FlopCounterMode (FLOPs / 2, attention on its math kernel, whose products FlopCounterMode
counts), its rows sum to the parameter count, and the rewrites either verify or say what they skipped."""
import importlib
import logging

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from onebyone import analyze
from onebyone.torch import (
    factorize,
    fold_batchnorm,
    linear_to_conv1x1,
    merge_pointwise,
    optimize,
    reparameterize,
)

from .cpus import REWRITES, WITH_ENGINES
from .ecosystem import randomize_norms

T = pytest.importorskip("transformers")


def configs():
    """name -> (model class, config, image size): small enough to build and run in well under a second."""
    vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
               patch_size=8)
    return {
        "vit": (T.ViTForImageClassification, T.ViTConfig(**vit), 32),
        "deit": (T.DeiTForImageClassification, T.DeiTConfig(**vit), 32),
        "beit": (T.BeitForImageClassification, T.BeitConfig(**vit, use_relative_position_bias=True), 32),
        "swin": (T.SwinForImageClassification, T.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                                                            num_heads=[2, 2], window_size=4), 32),
        "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig(hidden_sizes=[16, 32, 48, 64],
                                                                        depths=[1, 1, 1, 1]), 32),
        "resnet": (T.ResNetForImageClassification, T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                                  depths=[1, 1], layer_type="bottleneck"), 32),
        "mobilenet_v2": (T.MobileNetV2ForImageClassification, T.MobileNetV2Config(image_size=32,
                                                                                  depth_multiplier=0.35), 32),
        "mobilevit": (T.MobileViTForImageClassification, T.MobileViTConfig(
            image_size=32, hidden_sizes=[32, 40, 48], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64]), 32),
        "efficientnet": (T.EfficientNetForImageClassification, T.EfficientNetConfig(
            image_size=32, width_coefficient=0.25, depth_coefficient=0.2, hidden_dim=320), 32),
        "regnet": (T.RegNetForImageClassification, T.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32],
                                                                  depths=[1, 1], groups_width=8), 32),
        "levit": (T.LevitForImageClassification, T.LevitConfig(image_size=64, hidden_sizes=[32, 48, 64],
                                                               num_attention_heads=[1, 2, 2], depths=[1, 1, 1],
                                                               key_dim=[8, 8, 8]), 64),
        "dinov2": (T.Dinov2ForImageClassification, T.Dinov2Config(hidden_size=32, num_hidden_layers=2,  # a mask
                   num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=7), 28),  # token unread
    }


def build(name):
    cls, config, size = configs()[name]
    config.num_labels, config._attn_implementation = 10, "eager"
    torch.manual_seed(0)
    return randomize_norms(cls(config)), {"pixel_values": torch.randn(2, 3, size, size)}


def flop_counter_macs(model, example) -> int:
    """PyTorch's own count: attention on its math kernel, and nn.MultiheadAttention off its fused fast path
    (one native op whose products FlopCounterMode does not count), so every product is seen."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as fc:
            model(**example) if isinstance(example, dict) else model(*example)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return fc.get_total_flops() // 2


NAMES = list(configs())


@pytest.mark.parametrize("name", NAMES)
def test_analyzer_equals_pytorch_flop_counter(name):
    model, x = build(name)
    s = analyze(model, example=x)
    assert s.macs == flop_counter_macs(model, x) > 0  # the same convention: bias and norms are not MACs
    assert s.uncounted == [] and s.params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in s.rows) == s.params and s.batch_size == 2
    assert 0 < s.share()["pointwise"]["macs"] <= 100  # every model here has 1x1 convs or per-token Linears


def test_a_vit_is_mostly_one_by_one_convolutions_in_disguise():
    model, x = build("vit")
    s = analyze(model, example=x)
    share = s.share()
    assert share["pointwise"]["macs"] > 75 and share["attention"]["macs"] > 0  # per-token Linears: 1x1 convs
    assert {name for name, *_ in s.outside_layers} == {"vit.embeddings"}  # cls_token and position embeddings
    converted, report = linear_to_conv1x1(model, example=x)
    assert report.changed and analyze(converted, example=x).macs == s.macs


@pytest.mark.parametrize("name", NAMES)
def test_rewrites_verify_or_say_what_they_skipped(name):
    model, x = build(name)
    macs = analyze(model, example=x).macs // 2  # per sample
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for rewrite in (fold_batchnorm, merge_pointwise, linear_to_conv1x1, reparameterize):  # with merge_branches
        new, report = rewrite(model, example=x)  # each checks itself in float64 and raises past its tolerance
        assert report.max_abs_diff <= report.tolerance and report.macs_before == macs
        if rewrite is fold_batchnorm:  # every BatchNorm is either folded or listed with the reason
            said = " ".join(report.changed) + " " + " ".join(n for n, _ in report.skipped)
            assert all(n in said for n in norms)
            assert report.params_after < report.params_before or not report.changed
    _, report = factorize(model, energy=1.0, example=x)  # its whole-output error reads a ModelOutput (it raised)
    assert report.output_relative_error < 1e-4
    opt, report = optimize(model, x, passes=REWRITES)
    with torch.no_grad():
        want, got = model(**x).logits, opt(**x).logits
    assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))


def test_batchnorms_fold_in_models_fx_cannot_trace():
    model, x = build("resnet")
    folded, report = fold_batchnorm(model, example=x)
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(report.changed) == len(norms)  # every conv + BatchNorm pair
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def import_or_skip(name: str):
    """The module, or a skip that says why it cannot be used here (not installed, or a build that fails to
    import beside the pinned CPU torch, as torchvision's CUDA wheel does)."""
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - ImportError, or RuntimeError from a mismatched build
        pytest.skip(f"{name} does not import here: {type(e).__name__}: {e}")


@pytest.mark.parametrize("library,build_model", [
    ("torchvision", lambda tv: tv.models.resnet18()),
    ("torchvision", lambda tv: tv.models.vit_b_16(image_size=64)),
    ("timm", lambda timm: timm.create_model("deit_tiny_patch16_224", img_size=64, pretrained=False)),
    ("timm", lambda timm: timm.create_model("convnext_atto", pretrained=False)),
])
def test_torchvision_and_timm_models_where_they_import(library, build_model):
    model = build_model(import_or_skip(library)).eval()
    x = torch.randn(1, 3, 64, 64)
    s = analyze(model, example=x)
    assert s.macs == flop_counter_macs(model, (x,)) and s.uncounted == []


def test_vit_b16_at_its_published_size_is_95_percent_one_by_one_convolutions():
    config = T.ViTConfig()  # ViT-B/16 at 224 x 224: 17.56 G MACs published (torchvision's table)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    s = analyze(T.ViTForImageClassification(config).eval(), example={"pixel_values": torch.randn(1, 3, 224, 224)})
    assert s.macs == 17_563_061_760 and round(s.share()["pointwise"]["macs"], 1) == 95.3  # the README's numbers
    assert s.uncounted == [] and [n for n, *_ in s.outside_layers] == ["vit.embeddings"]


@pytest.mark.parametrize("name", ["vit"])  # a transformer (a pad before every conv, TF's "same": test_fold_pads)
def test_optimize_with_compile_on_real_models_keeps_their_outputs(name):
    model, x = build(name)
    opt, report = optimize(model, x, compile=True, passes=WITH_ENGINES)
    with torch.no_grad():
        want, got = model(**x).logits, opt(**x).logits
    assert (got - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))
    said = [c for c in report.changed + report.notes if "torch.compile" in c]
    assert len(said) == 1 and not [s for s in report.skipped if "compile" in s[0]], (said, report.skipped)


@pytest.mark.parametrize("name", ["convnext", "efficientnet", "vit"])
def test_linear_to_conv1x1_leaves_every_share_as_it_was(name):
    """One computation, one kind: a Linear at every pixel and the 1x1 conv it becomes are both pointwise, a
    head on one vector is dense in either form (convnext's 1x1 share moved 90.7% -> 93.4% when the forms
    were labelled apart), and squeeze-excitation 1x1 convs on 1x1 maps are dense."""
    model, x = build(name)
    converted, _ = linear_to_conv1x1(model, example=x)
    assert analyze(converted, example=x).share() == analyze(model, example=x).share()


def test_int8_on_a_hugging_face_vit_runs_each_form_and_prints_nothing(capfd):
    """Hugging Face's ViT casts its input to its patch projection's weight dtype and torch.fx cannot trace it:
    torch's int8 form runs layer by layer (each int8 layer answers .weight), every form is measured against
    float32, and neither the exporter's graph optimizer nor torch.fx prints to the caller."""
    model, x = build("vit")
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(2, 3, 32, 32, generator=g) for _ in range(4)]
    opt, report = optimize(model, cal[0], dtype=torch.int8, calibration=cal)
    p = report.precision
    assert "torch int8 (x86, layer by layer)" in p["forms"], report.skipped
    assert all(r["int8_alone_error"] is not None for r in p["layers"].values())
    assert all(f["relative_error"] > 0 for f in p["forms"].values())
    with torch.no_grad():
        new = torch.randn(3, 3, 32, 32, generator=g)
        want, got = model(new).logits, opt(new)
    got = got.logits if hasattr(got, "logits") else got
    assert (got - want).abs().max() <= p["tolerance"] * want.abs().max()
    assert capfd.readouterr().err == ""


def test_exporting_bert_for_an_engine_prints_nothing(capfd, caplog):
    """The exporter's graph optimizer (onnxscript) logs what it could not fold on BERT: kept from the caller,
    on the first call and on each new input shape."""
    pytest.importorskip("onnxruntime")
    from onebyone.torch.fast import OnnxRuntime

    config = T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          vocab_size=50)
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(config).eval()
    fast = OnnxRuntime(model)
    for batch in (2, 3):
        ids = torch.randint(0, 50, (batch, 8))
        with torch.no_grad():
            assert torch.allclose(fast(ids).logits, model(ids).logits, atol=1e-4)
    assert capfd.readouterr().err == ""
    assert [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == []
