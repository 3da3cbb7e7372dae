"""Structural re-parameterization: parallel linear branches summed into one kernel, in NumPy.

A 1x1 convolution is a k x k convolution whose kernel is zero outside its centre; an identity is a 1x1
convolution with the identity matrix; an eval BatchNorm is a per-channel affine map; an average pool is a
convolution with constant weights on the diagonal. Convolution is linear in its kernel, so branches that
read the same input with the same stride and centred windows sum to one convolution:
``sum_i conv(x, W_i, b_i) = conv(x, sum_i pad(W_i), sum_i b_i)``.

Kernels are (O, C / groups, kh, kw), as torch stores them.
"""
from __future__ import annotations

import numpy as np

from .errors import OneByOneError


def center_pad(w: np.ndarray, size: tuple) -> np.ndarray:
    """A (O, C/g, kh, kw) kernel zero-padded to (O, C/g, *size), centred: the same map with a wider window
    (and a padding larger by half the difference).

    >>> center_pad(np.ones((1, 1, 1, 1)), (3, 3))[0, 0]
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]])
    """
    dh, dw = size[0] - w.shape[2], size[1] - w.shape[3]
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise OneByOneError(f"a {w.shape[2]}x{w.shape[3]} kernel cannot be centred in {size[0]}x{size[1]}")
    return np.pad(w, ((0, 0), (0, 0), (dh // 2, dh // 2), (dw // 2, dw // 2)))


def identity_kernel(channels: int, groups: int = 1, size: tuple = (1, 1)) -> np.ndarray:
    """The kernel of the identity map on ``channels`` channels, grouped: (C, C/g, *size), a one at the
    centre of each channel's own tap."""
    if channels % groups:
        raise OneByOneError(f"groups={groups} must divide channels={channels}")
    per = channels // groups
    w = np.zeros((channels, per, 1, 1))
    w[np.arange(channels), np.arange(channels) % per, 0, 0] = 1.0
    return center_pad(w, size)


def average_kernel(channels: int, groups: int, size: tuple) -> np.ndarray:
    """An average pool over ``size`` windows as a convolution kernel: 1 / (kh * kw) on each channel's own
    taps (exact where the pool counts its zero padding, as ``count_include_pad=True`` does)."""
    w = identity_kernel(channels, groups)  # (C, C/g, 1, 1)
    return np.broadcast_to(w, (*w.shape[:2], *size)) / (size[0] * size[1])


def compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One kernel for a 1x1 convolution ``first`` (M, C, 1, 1) followed by ``second`` (O, M, kh, kw), both
    ungrouped: ``W[o, c] = sum_m second[o, m] * first[m, c]``. Exact where nothing but zeros is padded
    between them (``first`` without bias, or ``second`` without padding)."""
    if first.shape[2:] != (1, 1) or second.shape[1] != first.shape[0]:
        raise OneByOneError(f"compose takes a 1x1 kernel (M, C, 1, 1) then (O, M, kh, kw); got {first.shape} "
                            f"then {second.shape}")
    return np.einsum("omhw,mc->ochw", second, first[:, :, 0, 0])


def merge(kernels, biases, size: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the kernels, each centred in ``size``; sum of the biases): the one convolution the branches are.

    >>> w, b = merge([np.ones((2, 2, 3, 3)), identity_kernel(2)], [np.zeros(2), np.ones(2)], (3, 3))
    >>> w[:, :, 1, 1].tolist(), b.tolist()
    ([[2.0, 1.0], [1.0, 2.0]], [1.0, 1.0])
    """
    return sum(center_pad(np.asarray(w, np.float64), size) for w in kernels), sum(
        np.asarray(b, np.float64) for b in biases)
