"""The kind of every product is what it computes: a 1x1 convolution mixes channels at each of several
positions; one vector per sample, or a mix over positions (MLP-Mixer's tokens), is dense; every equivalent
form of one product gets one kind; a table read outside its module's forward is used, not dead weight."""
import pytest
import torch
from torch import nn

from onebyone.torch import Pointwise, conv1x1_to_linear, linear_to_conv1x1
from onebyone.torch.collect import analyze


def kinds(model, x) -> dict:
    return {r.name: r.kind for r in analyze(model, example=x).rows if r.macs}


class MixerBlock(nn.Module):
    """An MLP-Mixer block as its paper draws it: token mixing over the N patches, then channel mixing."""

    def __init__(self, n=16, c=32):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.tokens = nn.Sequential(nn.Linear(n, 2 * n), nn.GELU(), nn.Linear(2 * n, n))
        self.channels = nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):  # (B, N, C)
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)  # mixes the N patches
        return x + self.channels(self.norm2(x))  # mixes the C channels at each patch


def test_mixer_token_mixing_is_not_a_1x1_convolution():
    got = kinds(MixerBlock(), torch.randn(2, 16, 32))
    assert got == {"tokens.0": "dense", "tokens.2": "dense", "channels.0": "pointwise", "channels.2": "pointwise"}


class ViTBlock(nn.Module):
    def __init__(self, n=16, c=32, heads=4):
        super().__init__()
        self.heads, self.norm, self.qkv, self.proj = heads, nn.LayerNorm(c), nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c))

    def forward(self, x):  # (B, N, C)
        b, n, c = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)).softmax(-1)  # (B, H, N, N)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(x)


def test_every_linear_of_a_vit_block_is_per_token():
    rows = [(r.name, r.kind) for r in analyze(ViTBlock(), example=torch.randn(2, 16, 32)).rows if r.macs]
    assert rows == [("qkv", "pointwise"), ("ViTBlock.matmul", "attention"), ("ViTBlock.matmul", "attention"),
                    ("proj", "pointwise"), ("mlp.0", "pointwise"), ("mlp.2", "pointwise")]


class ConvThenLinear(nn.Module):
    """A conv's (B, C, L) output turned to (B, L, C) for a Linear: that Linear mixes channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(3, 8, 3), nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.conv(x).transpose(1, 2))


def test_a_linear_after_moving_a_convs_channels_last_is_a_1x1_convolution():
    assert kinds(ConvThenLinear(), torch.randn(2, 3, 20)) == {"conv": "conv", "fc": "pointwise"}


@pytest.mark.parametrize("form", ["Linear", "Conv2d", "Pointwise"])
def test_one_vector_per_sample_is_dense_in_every_form(form):
    torch.manual_seed(0)
    layer, x = {"Linear": (nn.Linear(64, 10), torch.randn(4, 64)),
                "Conv2d": (nn.Conv2d(64, 10, 1), torch.randn(4, 64, 1, 1)),  # a squeeze-excitation's 1x1
                "Pointwise": (Pointwise(64, 10), torch.randn(4, 64))}[form]
    stats = analyze(nn.Sequential(layer), example=x)
    assert [r.kind for r in stats.rows] == ["dense"] and stats.macs == 4 * 640


def test_linear_to_conv1x1_and_back_keep_every_kind():
    torch.manual_seed(0)
    head = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    per_pixel = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.Conv2d(16, 8, 1))
    for model, x in ((head.eval(), torch.randn(2, 3, 9, 9)), (per_pixel.eval(), torch.randn(2, 3, 5, 5))):
        before = analyze(model, example=x).share()
        as_conv, _ = linear_to_conv1x1(model, example=x)
        as_linear, _ = conv1x1_to_linear(model, example=x)
        for other in (as_conv, as_linear):
            assert analyze(other, example=x).share() == before  # the same computation, the same shares


class RelPosBias(nn.Module):
    """timm's CoAtNet / MaxViT relative position bias: a table that attention reads through get_bias()."""

    def __init__(self, n=4, heads=2):
        super().__init__()
        self.table = nn.Parameter(torch.randn(heads, (2 * n - 1) ** 2))
        self.register_buffer("index", torch.randint(0, (2 * n - 1) ** 2, (n * n, n * n)))

    def get_bias(self):
        return self.table[:, self.index]  # (H, N, N)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.rel_pos = nn.Linear(8, 24), RelPosBias()

    def forward(self, x):  # (B, 16, 8)
        q, k, v = self.qkv(x).reshape(x.shape[0], 16, 3, 2, 4).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) + self.rel_pos.get_bias()).softmax(-1)
        return (attn @ v).transpose(1, 2).reshape(x.shape[0], 16, 8)


def test_a_table_read_outside_its_modules_forward_is_used_not_never_called():
    model = nn.Sequential(Attention(), nn.Linear(8, 3), nn.Linear(3, 3))
    stats = analyze(nn.Sequential(model[0], model[1]), example=torch.randn(2, 16, 8))
    assert stats.never_called == []
    assert [(n, t, p) for n, t, p in stats.outside_layers] == [("0.rel_pos", "RelPosBias", 2 * 49)]
    dead = Attention()
    dead.spare = nn.Linear(3, 3)  # never called, never read: dead weight
    assert analyze(dead, example=torch.randn(2, 16, 8)).never_called == [("spare", "Linear", 12)]
