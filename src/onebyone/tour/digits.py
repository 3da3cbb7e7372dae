"""A small all-convolutional digits classifier with a 1x1 class-map head, trained in NumPy.

The network reads the 8 x 8 digits of scikit-learn (bundled, no download):

    5x5 conv 1 -> 32, ReLU  ->  1x1 conv 32 -> 32, ReLU  ->  1x1 conv 32 -> 10 (class maps)  ->  mean over pixels

Every layer is ``ops.dense`` on rows of pixels (the 5x5 conv on ``forms.im2col`` patches, the 1x1 convs
on the pixels themselves), and it is trained with ``ops.dense_backward`` and Adam. The tour uses it to
show the class maps of a trained model; it is small enough to train in about a second on two cores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import data, forms, ops


@dataclass
class DigitsModel:
    params: list  # [W1 (32, 25), b1, W2 (32, 32), b2, W3 (10, 32), b3]

    def features(self, patches):
        """(..., 25) patches -> the two hidden layers, each (..., 32)."""
        w1, b1, w2, b2 = self.params[:4]
        h1 = np.maximum(ops.dense(patches, w1, b1), 0)
        return h1, np.maximum(ops.dense(h1, w2, b2), 0)

    def maps(self, patches):
        """(N, 8, 8, 25) patches -> class maps (N, 8, 8, 10): the 1x1 head at every pixel."""
        return ops.dense(self.features(patches)[1], *self.params[4:])

    def logits(self, patches):
        return self.maps(patches).mean(axis=(1, 2))  # (N, 8, 8, 10) -> (N, 10)


def patches(x):
    """(N, 1, 8, 8) digits -> (N, 8, 8, 25): the 5x5 neighbourhood of every pixel, zero padded."""
    return forms.im2col(x, 5, padding=2).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _grads(model: DigitsModel, p, y):
    """Gradients of the mean cross-entropy of a batch of patches ``p`` with labels ``y``."""
    w1, _, w2, _, w3, _ = model.params
    h1, h2 = model.features(p)
    probs = softmax(ops.dense(h2, *model.params[4:]).mean(axis=(1, 2)))  # (B, 10)
    g = probs
    g[np.arange(len(y)), y] -= 1
    g_maps = np.broadcast_to(g[:, None, None, :] / (len(y) * 64), h2.shape[:3] + (10,))  # d loss / d maps
    g_h2, g_w3, g_b3 = ops.dense_backward(h2, w3, g_maps)
    g_h1, g_w2, g_b2 = ops.dense_backward(h1, w2, g_h2 * (h2 > 0))
    _, g_w1, g_b1 = ops.dense_backward(p, w1, g_h1 * (h1 > 0))
    return [g_w1, g_b1, g_w2, g_b2, g_w3, g_b3]


def train(rng, epochs: int = 20, batch: int = 64, lr: float = 0.01):
    """Train on the digits' train split; returns (model, test patches, test images, test labels)."""
    x, y = data.load("digits", "train")  # (N, 1, 8, 8) in [0, 1]
    x_test, y_test = data.load("digits", "test")
    p = patches(x)
    sizes = [(32, 25), (32, 32), (10, 32)]
    params = [a for o, i in sizes for a in ((rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32),
                                            np.zeros(o, np.float32))]
    model = DigitsModel(params)
    m, v = [np.zeros_like(a) for a in params], [np.zeros_like(a) for a in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            idx = order[s:s + batch]
            step += 1
            for i, g in enumerate(_grads(model, p[idx], y[idx])):  # Adam
                m[i] = 0.9 * m[i] + 0.1 * g
                v[i] = 0.999 * v[i] + 0.001 * g * g
                params[i] -= lr * (m[i] / (1 - 0.9 ** step)) / (np.sqrt(v[i] / (1 - 0.999 ** step)) + 1e-8)
    return model, patches(x_test), x_test, y_test
