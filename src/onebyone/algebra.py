"""Framework-free weight algebra behind the exact rewrites: fold an affine (BatchNorm) into a layer,
merge two linear layers, and factorize one by truncated SVD.

Weights are (O, ...) arrays whose first axis is the output channel (PyTorch order). All functions
return new arrays in float64 unless the input is float32.

>>> w, b = np.array([[1.0, 2.0]]), np.array([0.5])
>>> fold_affine_after(w, b, np.array([2.0]), np.array([1.0]))
(array([[2., 4.]]), array([2.]))
"""
from __future__ import annotations

import numbers

import numpy as np

from .checks import as_float_array, check_bias, check_int
from .errors import OneByOneError


def batchnorm_affine(mean, var, gamma, beta, eps: float):
    """BatchNorm in eval mode as ``scale * x + shift`` per channel: four (C,) vectors and ``eps`` >= 0, with
    ``running_var + eps`` > 0 everywhere (a norm that divides by zero or a negative variance is refused)."""
    mean = as_float_array(mean, "running_mean", ndim=1)
    var, gamma, beta = (_per_channel(v, name, mean.size) for v, name in
                        ((var, "running_var"), (gamma, "weight"), (beta, "bias")))
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise OneByOneError(f"eps must be a number >= 0, got {eps!r}")
    bad = ~(var + eps > 0)
    if bad.any():
        raise OneByOneError(f"running_var + eps must be > 0 for every channel; {int(bad.sum())} of {var.size} are not "
                            f"(channel {int(np.argmax(bad))}: var {var[np.argmax(bad)]}, eps {eps})")
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _per_channel(v, name: str, n: int) -> np.ndarray:
    """A per-channel vector of ``n`` floats (a list or an array), or a OneByOneError naming it."""
    v = as_float_array(v, name)
    if v.shape != (n,):
        raise OneByOneError(f"the affine must have one {name} per channel ({n}), got shape {v.shape}")
    return v


def fold_affine_after(w, b, scale, shift):
    """``scale * (W x + b) + shift`` as one layer: W' = scale[o] * W[o], b' = scale * b + shift."""
    w = as_float_array(w, "w")
    b = np.zeros(w.shape[0], w.dtype) if b is None else check_bias(b, w.shape[0], w.dtype)
    scale, shift = _per_channel(scale, "scale", w.shape[0]), _per_channel(shift, "shift", w.shape[0])
    if scale.shape != (w.shape[0],):
        raise OneByOneError(
            f"the affine must have one scale per output channel ({w.shape[0]}), got shape {scale.shape}"
        )
    return w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), b * scale + shift


def fold_affine_after_transposed(w, b, scale, shift, groups: int = 1):
    """``scale * (convT(x) + b) + shift`` as one transposed conv, whose weight is (I, O/g, *k): output
    channel ``o`` of group ``k`` is column ``o - k * O/g`` of rows ``k * I/g ...``; each scaled by ``scale[o]``.

    >>> w, b = fold_affine_after_transposed(np.ones((2, 1, 1)), None, np.array([2.0, 3.0]), np.zeros(2), groups=2)
    >>> w.ravel().tolist(), b.tolist()
    ([2.0, 3.0], [0.0, 0.0])
    """
    w = as_float_array(w, "w", ndim=range(2, 6))
    groups = check_int(groups, "groups")
    cin, og = w.shape[:2]
    if cin % groups:
        raise OneByOneError(f"a transposed conv's weight (I, O/g, ...) needs I divisible by groups={groups}, got "
                            f"shape {w.shape}")
    out = og * groups
    scale, shift = _per_channel(scale, "scale", out), _per_channel(shift, "shift", out)
    b = np.zeros(out, w.dtype) if b is None else check_bias(b, out, w.dtype)
    per_row = scale.reshape(groups, 1, og).repeat(cin // groups, axis=1).reshape(cin, og)  # scale[o] at [i, o % og]
    return w * per_row.reshape(per_row.shape + (1,) * (w.ndim - 2)), b * scale + shift


def fold_affine_before(w, b, scale, shift, groups: int = 1):
    """``W (scale * x + shift) + b`` as one layer, for a dense weight (O, I/g) or a conv's (O, I/g, *k) whose
    every window lies inside its input (no padding: a padded window would read zeros, not the shift).

    W'[o, i, ...] = W[o, i, ...] * scale[input channel of i]; b' = b + sum_(i, ...) W[o, i, ...] * shift[...].
    """
    w = as_float_array(w, "w", ndim=range(2, 6))
    groups = check_int(groups, "groups")
    o, cg = w.shape[:2]
    if o % groups:
        raise OneByOneError(f"output channels not divisible by groups: w has {o} output channels (shape {w.shape}), "
                            f"groups={groups}")
    scale, shift = _per_channel(scale, "scale", cg * groups), _per_channel(shift, "shift", cg * groups)
    if scale.shape != (cg * groups,):
        raise OneByOneError(
            f"the affine must have one scale per input channel ({cg * groups}), got shape {scale.shape}"
        )
    m = w.reshape(o, cg, -1)  # (O, I/g, kernel positions)
    rows = np.arange(o) // (o // groups)  # group of each output channel
    s = scale.reshape(groups, cg)[rows][..., None]  # (O, I/g, 1): the scale each weight meets
    t = shift.reshape(groups, cg)[rows][..., None]
    b = np.zeros(o, w.dtype) if b is None else check_bias(b, o, w.dtype)
    return (m * s).reshape(w.shape), b + (m * t).sum(axis=(1, 2))


def merge_linear(w1, b1, w2, b2):
    """Two linear maps in a row (``W2 (W1 x + b1) + b2``) as one: W2 @ W1 and W2 @ b1 + b2."""
    w1, w2 = as_float_array(w1, "w1", ndim=2), as_float_array(w2, "w2", ndim=2)
    if w2.shape[1] != w1.shape[0]:
        raise OneByOneError(
            f"cannot merge: the second layer reads {w2.shape[1]} channels, the first writes {w1.shape[0]}"
        )
    dtype = np.result_type(w1, w2)
    b1 = np.zeros(w1.shape[0], dtype) if b1 is None else check_bias(b1, w1.shape[0], dtype)
    b2 = np.zeros(w2.shape[0], dtype) if b2 is None else check_bias(b2, w2.shape[0], dtype)
    return w2 @ w1, w2 @ b1 + b2


def choose_rank(singular_values, energy: float) -> int:
    """Smallest r whose leading singular values keep ``energy`` of the squared Frobenius norm."""
    if not 0.0 < energy <= 1.0:
        raise OneByOneError(f"energy must be in (0, 1], got {energy}")
    sv = as_float_array(singular_values, "singular_values", ndim=1)
    e = np.cumsum(sv.astype(np.float64) ** 2)
    if not e[-1] > 0:
        raise OneByOneError(f"the singular values hold no energy to keep (their squares sum to {e[-1]})")
    return int(np.searchsorted(e / e[-1], energy - 1e-12) + 1)


def check_rank_energy(rank, energy) -> None:
    """Exactly one of ``rank`` (an integer >= 1) and ``energy`` (a number in (0, 1]), refused otherwise."""
    if (rank is None) == (energy is None):
        raise OneByOneError(f"give exactly one of rank / energy, got rank={rank!r}, energy={energy!r}")
    if rank is not None:
        check_int(rank, "rank")
    elif isinstance(energy, bool) or not isinstance(energy, numbers.Real) or not 0.0 < energy <= 1.0:
        raise OneByOneError(f"energy must be a number in (0, 1], got {energy!r}")


def truncated_svd(w2d, rank=None, energy=None):
    """W (O, K) ~= B @ A with A (r, K) and B (O, r): the best rank-r approximation (truncated SVD).

    Returns (A, B, rank, kept_energy). Exactly one of ``rank`` / ``energy`` is given. The singular values
    come from the eigenvalues of the smaller Gram matrix (W W^T or W^T W; their square roots), and B @ A
    is W projected onto the r leading singular vectors (U_r U_r^T W, or W V_r V_r^T): the same product a
    full SVD truncates to (within about 1e-8 of ||W||: the Gram matrix is formed in float64, whatever W's
    dtype), at the cost of one m x m eigendecomposition, m = min(O, K). A and B come in W's dtype.

    >>> w = np.outer([1.0, 2.0], [3.0, 0.0, 4.0])  # rank 1
    >>> a, b, r, kept = truncated_svd(w, energy=0.99)
    >>> r, round(kept, 6), bool(np.allclose(b @ a, w))
    (1, 1.0, True)
    """
    w2d = as_float_array(w2d, "w", ndim=2)
    check_rank_energy(rank, energy)
    if not np.isfinite(w2d).all():
        raise OneByOneError(f"the weight of shape {w2d.shape} holds {int((~np.isfinite(w2d)).sum()):,} NaN or "
                            "infinite values: it has no singular values to keep")
    wide = w2d.shape[0] <= w2d.shape[1]
    m = (w2d if wide else w2d.T).astype(np.float64)  # (small, big); in float64: the Gram matrix squares the
    top = float(np.abs(m).max())  # condition number, which float32 would lose half its digits to; and W / max|W|
    evals, evecs = np.linalg.eigh((m / top) @ (m / top).T if top > 0 else m @ m.T)  # keeps its square in range
    s2, vecs = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]  # squared singular values, leading first
    limit = s2.size
    if rank is None:  # (an all-zero weight keeps all of its no energy at rank 1)
        rank = choose_rank(np.sqrt(s2), energy) if top > 0 else 1
    rank = check_int(rank, "rank")
    if rank > limit:
        raise OneByOneError(f"rank must be <= min(out, in) = {limit} for a weight of shape {w2d.shape}, got {rank}")
    unit = w2d / top if top > 0 else w2d  # (the eigenvalues are of W / max|W|: so is the norm they are held to)
    total = float(np.sum(unit * unit))  # ||W||_F^2, the eigenvalues' sum without their rounding
    kept = min(1.0, float(np.sum(s2[:rank])) / total) if total > 0 else 1.0
    basis = np.ascontiguousarray(vecs[:, :rank])  # (m, r): leading left (wide) or right (tall) singular vectors
    w64, like = w2d.astype(np.float64), w2d.dtype
    if wide:  # A = U_r^T W (r, K), B = U_r (O, r); in the weight's own dtype
        return (basis.T @ w64).astype(like), basis.astype(like), rank, kept
    return np.ascontiguousarray(basis.T).astype(like), (w64 @ basis).astype(like), rank, kept  # A = V_r^T, B = W V_r
