"""A grouped 2-D convolution whose gradient exists on every CPU kernel set.

TensorFlow 2.15 runs a grouped convolution (input depth a multiple of the filter's) forward
on both of its CPU kernel sets, but its two gradients (``Conv2DBackpropInput`` and
``Conv2DBackpropFilter``) only in oneDNN, which it enables by default only on CPUs with
AVX-512 VNNI/BF16 or AMX. Elsewhere — AVX2-only x86, every ARM machine — they raise
``InvalidArgumentError: Gradients for grouped convolutions are not supported on CPU``.

:func:`grouped_conv2d` therefore gives the convolution a custom gradient made of *forward*
grouped convolutions, which run everywhere and as fast as the forward pass:

* input gradient — the output gradient, dilated by the stride (zeros between rows and
  columns) and padded for a full correlation, convolved with the spatially flipped filter
  whose per-group in/out channels are swapped;
* filter gradient — the padded input with batch and per-group channels exchanged,
  convolved with the output gradient as a filter dilated by the stride.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedlab._tf import tf

__all__ = ["grouped_conv2d", "same_padding"]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding ``(before, after)`` of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _dilate(t: tf.Tensor, axis: int, n: int, stride: int) -> tf.Tensor:
    """Insert ``stride - 1`` zeros between the ``n`` entries of 4-D ``t`` along ``axis``."""
    if stride == 1:
        return t
    paddings = [[0, 0]] * 5
    paddings[axis + 1] = [0, stride - 1]
    padded = tf.pad(tf.expand_dims(t, axis + 1), paddings)
    shape = tf.unstack(tf.shape(t))
    shape[axis] = n * stride
    merged = tf.reshape(padded, tf.stack(shape))
    index = [slice(None)] * 4
    index[axis] = slice(0, (n - 1) * stride + 1)
    return merged[tuple(index)]


def _batch_to_group_channels(
    x: tf.Tensor, n: tf.Tensor, positions: int, groups: tf.Tensor, channels: int
) -> tf.Tensor:
    """``(N, P, G·C)`` → ``(C, P, G·N)``. Two transposes that each keep a contiguous inner
    block run about twice as fast on Eigen as one 4-D shuffle that swaps the outer and
    inner axes."""
    rows = tf.transpose(tf.reshape(x, [n, -1]))  # (P·G·C, N)
    t = tf.transpose(tf.reshape(rows, [positions * groups, channels, n]), [1, 0, 2])
    return tf.reshape(t, [channels, positions, -1])


def grouped_conv2d(
    x: tf.Tensor,
    kernel: tf.Tensor,
    *,
    spatial: Sequence[int],
    kernel_size: Sequence[int],
    strides: Sequence[int],
    padding: str,
    channels: int,
    filters: int,
) -> tf.Tensor:
    """``tf.nn.conv2d`` of ``x`` ``(N, H, W, G·C)`` with ``kernel`` ``(kh, kw, C, G·O)``.

    Group ``g`` reads input channels ``[gC, (g+1)C)`` and writes ``[gO, (g+1)O)``; ``G`` may
    be dynamic. Static sizes (``spatial`` = (H, W), ``kernel_size``, ``strides``, ``padding``
    "SAME"/"VALID", ``channels`` = C, ``filters`` = O) fix the padding arithmetic.
    """
    (h, w), (kh, kw), (sh, sw) = tuple(spatial), tuple(kernel_size), tuple(strides)
    if padding == "SAME":
        (pt, pb), (pl, pr) = same_padding(h, kh, sh), same_padding(w, kw, sw)
    elif padding == "VALID":
        pt = pb = pl = pr = 0
    else:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    hp, wp = h + pt + pb, w + pl + pr  # the padded input (never materialised)
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    pads = [[0, 0], [pt, pb], [pl, pr], [0, 0]]

    @tf.custom_gradient
    def conv(x: tf.Tensor, kernel: tf.Tensor) -> Any:
        y = tf.nn.conv2d(x, kernel, strides=[1, sh, sw, 1], padding=pads)

        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            n = tf.shape(x)[0]
            groups = tf.shape(kernel)[3] // filters
            # Input gradient: a full correlation of the dilated dy with the flipped filter.
            # Only the rows/columns of x itself are computed, not those of its padding.
            dyd = _dilate(_dilate(dy, 1, oh, sh), 2, ow, sw)
            ld_h, ld_w = (oh - 1) * sh + 1, (ow - 1) * sw + 1
            full = [[0, 0], [kh - 1 - pt, h + pt - ld_h], [kw - 1 - pl, w + pl - ld_w], [0, 0]]
            k5 = tf.reshape(kernel, [kh, kw, channels, groups, filters])
            flipped = tf.reverse(k5, axis=[0, 1])
            k_t = tf.reshape(tf.transpose(flipped, [0, 1, 4, 3, 2]), [kh, kw, filters, -1])
            dx = tf.nn.conv2d(dyd, k_t, strides=1, padding=full)
            # Filter gradient: batch ↔ per-group channels, dy as a filter dilated by the stride.
            xt = _batch_to_group_channels(x, n, h * w, groups, channels)
            xt = tf.reshape(xt, [channels, h, w, -1])
            dyt = tf.transpose(dy, [1, 2, 0, 3])  # (oh, ow, N, G·O)
            dk = tf.nn.conv2d(xt, dyt, strides=1, padding=pads, dilations=[1, sh, sw, 1])
            dk = tf.transpose(dk[:, :kh, :kw, :], [1, 2, 0, 3])
            return dx, dk

        return y, grad

    return conv(x, kernel)
