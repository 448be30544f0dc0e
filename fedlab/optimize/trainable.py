"""A trainable TFLite model that the stock LiteRT runtime runs: builtin ops only, no Flex.

Autodiff of a Keras model brings ops the TFLite builtin set lacks (``ReluGrad``,
``SparseSoftmaxCrossEntropyWithLogits``, ``Conv2DBackpropFilter``, ``BroadcastGradientArgs``
with a dynamic batch — tensorflow#54244 is what a Raspberry Pi then prints). So the layers of
a model are translated into explicit forward and backward passes written with ops that
convert to builtins:

* Dense: ``dW = xᵀ·dy``, ``dx = dy·Wᵀ`` (FULLY_CONNECTED / BATCH_MATMUL);
* Conv1D/Conv2D: image patches built by strided slicing and PACK; the forward pass and the filter
  gradient are one matmul each on them; the input gradient is the patches of the output
  gradient times the flipped kernel (stride 1) or a TRANSPOSE_CONV (strided);
* ReLU/ReLU6: ``dy · (0 < y < max)``; max pooling: the gradient is routed to the first
  maximum of each window (ARG_MAX, ONE_HOT, DEPTH_TO_SPACE); global average pooling:
  broadcast;
* the loss: ``-Σ w·onehot·log_softmax(z)`` with per-example weights ``w``, whose gradient is
  ``w·(softmax(z) − onehot)`` — the weights make a padded last batch exact.

The batch dimension is static. With ``trainable="head"`` the layers before the last Dense
run forward only (any layer TFLite supports, batch norm and depthwise conv included) and
only the head trains: the fallback for models whose layers have no builtin backward here.

Signatures: ``train(x, y, w, lr, mu, beta) → loss`` (SGD; momentum ``beta``; FedProx ``mu``
towards the weights last set), ``infer(x) → logits``, ``get_weights() → w00…``,
``set_weights(w00…) → ok``. Checkpoints are written by the device from ``get_weights``
(``tf.raw_ops.Save``/``Restore`` exist only as Flex ops).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedlab._tf import keras, tf

__all__ = ["TrainableExport", "UnsupportedLayer", "export_trainable_tflite", "flex_ops"]

Trainable = Literal["all", "head"]


class UnsupportedLayer(ValueError):
    """A layer has no builtin-only backward pass here (use ``trainable="head"``)."""


@dataclass(frozen=True, slots=True)
class TrainableExport:
    """A trainable ``.tflite`` and what a device needs to drive it.

    Attributes
    ----------
    model : bytes
        The flatbuffer.
    batch_size : int
        The static batch of ``train`` and ``infer``.
    input_shape : tuple of int
        One example's shape.
    num_classes : int
        Output classes.
    weight_shapes : tuple of tuple of int
        Shapes of the model's weights, in Keras ``get_weights`` order.
    trainable_indices : tuple of int
        Which of those weights the ``train`` signature updates (``w00``, ``w01``… in order).
    trainable : {"all", "head"}
        What was requested.
    ops : tuple of str
        Operators in the flatbuffer (builtins only).
    """

    model: bytes
    batch_size: int
    input_shape: tuple[int, ...]
    num_classes: int
    weight_shapes: tuple[tuple[int, ...], ...]
    trainable_indices: tuple[int, ...]
    trainable: Trainable
    ops: tuple[str, ...]

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description (everything but the flatbuffer)."""
        out = asdict(self)
        del out["model"]
        return json.loads(json.dumps(out))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (the ``.tflite``) and ``path.json`` (the metadata)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.model)
        target.with_suffix(".json").write_text(json.dumps(self.metadata(), indent=1))
        return target


# -- layer kernels: forward returns (y, cache); backward returns (dx, grads) -------------------
def _activation(layer: Any) -> tuple[str, float | None]:
    name = getattr(getattr(layer, "activation", None), "__name__", "linear")
    if name in ("linear", "relu"):
        return name, None
    raise UnsupportedLayer(
        f"layer {layer.name!r}: activation {name!r} has no builtin backward here "
        "(use relu or linear, or trainable='head')"
    )


def _act_forward(kind: str, cap: float | None, z: tf.Tensor) -> tf.Tensor:
    if kind == "linear":
        return z
    return tf.nn.relu(z) if cap is None else tf.minimum(tf.nn.relu(z), cap)


def _act_backward(kind: str, cap: float | None, y: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    if kind == "linear":
        return dy
    mask = tf.sign(y)  # y = relu(z) >= 0: one op for the (y > 0) mask
    if cap is not None:
        mask = mask * tf.cast(y < cap, dy.dtype)
    return dy * mask


def _same_pad(size: int, k: int, s: int) -> tuple[int, int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


class _Conv:
    """Conv2D, or Conv1D as a Conv2D of height 1."""

    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        self.one_d = isinstance(layer, keras.layers.Conv1D)
        if layer.groups != 1 or any(d != 1 for d in np.atleast_1d(layer.dilation_rate)):
            raise UnsupportedLayer(f"layer {layer.name!r}: groups/dilation are not supported")
        if layer.padding not in ("same", "valid"):
            raise UnsupportedLayer(f"layer {layer.name!r}: padding {layer.padding!r}")
        self.kind, self.cap = _activation(layer)
        self.bias = layer.use_bias
        ks = tuple(int(k) for k in np.atleast_1d(layer.kernel_size))
        st = tuple(int(s) for s in np.atleast_1d(layer.strides))
        self.k = (1, *ks) if self.one_d else ks
        self.s = (1, *st) if self.one_d else st
        h, w, c = (1, *in_shape) if self.one_d else in_shape
        self.in_hwc = (h, w, c)
        self.o = int(layer.filters)
        if layer.padding == "same":
            ho, pt, pb = _same_pad(h, self.k[0], self.s[0])
            wo, pl, pr = _same_pad(w, self.k[1], self.s[1])
        else:
            ho, wo = (h - self.k[0]) // self.s[0] + 1, (w - self.k[1]) // self.s[1] + 1
            pt = pb = pl = pr = 0
        self.pads = ((pt, pb), (pl, pr))
        self.out_hw = (ho, wo)
        self.padding = layer.padding.upper()
        self.out_shape = (wo, self.o) if self.one_d else (ho, wo, self.o)
        self.n_params = 2 if self.bias else 1

    def _4d(self, x: tf.Tensor) -> tf.Tensor:
        return tf.expand_dims(x, 1) if self.one_d else x

    def _kernel(self, kernel: tf.Tensor) -> tf.Tensor:
        return tf.expand_dims(kernel, 0) if self.one_d else kernel

    @staticmethod
    def _im2col(
        x4: tf.Tensor, k: tuple[int, ...], s: tuple[int, ...], out: tuple[int, int], pads: Any
    ) -> tf.Tensor:
        """(B·Ho·Wo, kh·kw·C) patches, ordered (i, j, c) like a reshaped HWIO kernel."""
        (kh, kw), (sh, sw), (ho, wo) = k, s, out
        xp = tf.pad(x4, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
        # PACK on a new axis, then a free reshape: same (i, j, c) order as concatenating on
        # channels, measured 20 % faster for the whole train step in LiteRT.
        patches = tf.stack(
            [
                xp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
                for i in range(kh)
                for j in range(kw)
            ],
            axis=-2,
        )
        return tf.reshape(patches, (-1, kh * kw * int(x4.shape[-1])))

    def _cols(self, x4: tf.Tensor) -> tf.Tensor:
        return self._im2col(x4, self.k, self.s, self.out_hw, self.pads)

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        # The convolution as patches × kernel matrix: a matmul with a variable operand is
        # faster in LiteRT than CONV_2D with non-constant filters (XNNPACK takes only
        # constant ones), and the patches are reused by the filter gradient.
        x4 = self._4d(x)
        (kh, kw), (ho, wo) = self.k, self.out_hw
        cols = self._cols(x4)
        wmat = tf.reshape(params[0], (kh * kw * self.in_hwc[2], self.o))
        z = tf.reshape(tf.matmul(cols, wmat), (x4.shape[0], ho, wo, self.o))
        if self.bias:
            z = z + params[1]
        y = _act_forward(self.kind, self.cap, z)
        return (tf.squeeze(y, 1) if self.one_d else y), (x4, y, cols)

    def backward(
        self, dy: tf.Tensor, cache: Any, params: list[tf.Tensor], need_dx: bool
    ) -> tuple[tf.Tensor | None, list[tf.Tensor]]:
        x4, y, cols = cache
        dz = _act_backward(self.kind, self.cap, y, self._4d(dy))
        (kh, kw), (sh, sw) = self.k, self.s
        c = self.in_hwc[2]
        dz2 = tf.reshape(dz, (-1, self.o))
        dkernel = tf.reshape(tf.matmul(cols, dz2, transpose_a=True), (kh, kw, c, self.o))
        grads = [tf.squeeze(dkernel, 0) if self.one_d else dkernel]
        if self.bias:
            grads.append(tf.reduce_sum(dz2, axis=0))
        dx = None
        if need_dx and (sh, sw) == (1, 1):
            # Stride 1: the input gradient is a convolution of dz with the flipped kernel,
            # again as patches × matrix (TRANSPOSE_CONV with a variable filter is slow).
            h, w = self.in_hwc[:2]
            (pt, pb), (pl, pr) = self.pads
            back = ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr))
            dcols = self._im2col(dz, self.k, (1, 1), (h, w), back)
            flipped = tf.transpose(tf.reverse(self._kernel(params[0]), [0, 1]), (0, 1, 3, 2))
            dx4 = tf.reshape(
                tf.matmul(dcols, tf.reshape(flipped, (kh * kw * self.o, c))),
                (x4.shape[0], h, w, c),
            )
            dx = tf.squeeze(dx4, 1) if self.one_d else dx4
        elif need_dx:
            dx4 = tf.nn.conv2d_transpose(
                dz,
                self._kernel(params[0]),
                output_shape=(x4.shape[0], *self.in_hwc),
                strides=(1, sh, sw, 1),
                padding=self.padding,
            )
            dx = tf.squeeze(dx4, 1) if self.one_d else dx4
        return dx, grads


class _Dense:
    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        if len(in_shape) != 1:
            raise UnsupportedLayer(f"layer {layer.name!r}: Dense on a {len(in_shape)}-D input")
        self.kind, self.cap = _activation(layer)
        self.bias = layer.use_bias
        self.out_shape = (int(layer.units),)
        self.n_params = 2 if self.bias else 1

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        z = tf.matmul(x, params[0])
        if self.bias:
            z = z + params[1]
        y = _act_forward(self.kind, self.cap, z)
        return y, (x, y)

    def backward(
        self, dy: tf.Tensor, cache: Any, params: list[tf.Tensor], need_dx: bool
    ) -> tuple[tf.Tensor | None, list[tf.Tensor]]:
        x, y = cache
        dz = _act_backward(self.kind, self.cap, y, dy)
        grads = [tf.matmul(x, dz, transpose_a=True)]
        if self.bias:
            grads.append(tf.reduce_sum(dz, axis=0))
        dx = tf.matmul(dz, params[0], transpose_b=True) if need_dx else None
        return dx, grads


class _Stateless:
    n_params = 0
    out_shape: tuple[int, ...]

    def backward(
        self, dy: tf.Tensor, cache: Any, params: list[tf.Tensor], need_dx: bool
    ) -> tuple[tf.Tensor | None, list[tf.Tensor]]:
        return (self._dx(dy, cache) if need_dx else None), []

    def _dx(self, dy: tf.Tensor, cache: Any) -> tf.Tensor:
        raise NotImplementedError


class _Relu(_Stateless):
    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        cap = getattr(layer, "max_value", None)
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
        if slope or threshold:
            raise UnsupportedLayer(f"layer {layer.name!r}: leaky/thresholded ReLU")
        self.cap = None if cap is None else float(cap)
        self.out_shape = in_shape

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        y = _act_forward("relu", self.cap, x)
        return y, y

    def _dx(self, dy: tf.Tensor, cache: Any) -> tf.Tensor:
        return _act_backward("relu", self.cap, cache, dy)


class _Flatten(_Stateless):
    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        self.in_shape = in_shape
        self.out_shape = (int(np.prod(in_shape)),)

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        return tf.reshape(x, (x.shape[0], -1)), x.shape[0]

    def _dx(self, dy: tf.Tensor, cache: Any) -> tf.Tensor:
        return tf.reshape(dy, (cache, *self.in_shape))


class _GlobalAvg(_Stateless):
    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        if getattr(layer, "keepdims", False) or layer.data_format != "channels_last":
            raise UnsupportedLayer(f"layer {layer.name!r}: keepdims/channels_first")
        self.in_shape = in_shape
        self.axes = tuple(range(1, len(in_shape)))
        self.count = float(np.prod(in_shape[:-1]))
        self.out_shape = (in_shape[-1],)

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        return tf.reduce_mean(x, axis=self.axes), x.shape[0]

    def _dx(self, dy: tf.Tensor, cache: Any) -> tf.Tensor:
        shape = (cache, *([1] * (len(self.in_shape) - 1)), self.in_shape[-1])
        return tf.broadcast_to(tf.reshape(dy / self.count, shape), (cache, *self.in_shape))


class _MaxPool(_Stateless):
    """Non-overlapping max pooling (pool == strides, valid padding)."""

    def __init__(self, layer: Any, in_shape: tuple[int, ...]) -> None:
        self.one_d = isinstance(layer, keras.layers.MaxPooling1D)
        pool = tuple(int(p) for p in np.atleast_1d(layer.pool_size))
        strides = tuple(int(s) for s in np.atleast_1d(layer.strides))
        if pool != strides or layer.padding != "valid":
            raise UnsupportedLayer(
                f"layer {layer.name!r}: only non-overlapping 'valid' max pooling is supported"
            )
        if not self.one_d and pool[0] != pool[1]:
            raise UnsupportedLayer(f"layer {layer.name!r}: only square max pooling windows")
        self.p = (1, *pool) if self.one_d else pool
        h, w, c = (1, *in_shape) if self.one_d else in_shape
        self.in_hwc = (h, w, c)
        self.out_hw = (h // self.p[0], w // self.p[1])
        self.out_shape = (self.out_hw[1], c) if self.one_d else (self.out_hw[0], self.out_hw[1], c)

    def forward(self, x: tf.Tensor, params: list[tf.Tensor]) -> tuple[tf.Tensor, Any]:
        x4 = tf.expand_dims(x, 1) if self.one_d else x
        y = tf.nn.max_pool2d(x4, (1, *self.p, 1), (1, *self.p, 1), "VALID")
        return (tf.squeeze(y, 1) if self.one_d else y), (x4, y)

    def _dx(self, dy: tf.Tensor, cache: Any) -> tf.Tensor:
        # The gradient goes to the FIRST maximum of each window in row-major order, as
        # TensorFlow's MaxPoolGrad does: equal values are common (a ReLU'd bias over a blank
        # image region), and routing to every tied element would multiply the gradient.
        x4, _ = cache
        (ph, pw), (ho, wo), (h, w, c) = self.p, self.out_hw, self.in_hwc
        b, k = x4.shape[0], ph * pw
        used = x4[:, : ho * ph, : wo * pw, :]
        windows = (
            tf.reshape(used, (b, wo, pw, c))
            if self.one_d
            else tf.reshape(tf.nn.space_to_depth(used, ph), (b, ho, wo, k, c))
        )
        axis = 2 if self.one_d else 3
        first = tf.one_hot(
            tf.math.argmax(windows, axis=axis, output_type=tf.int32), k, axis=axis, dtype=dy.dtype
        )
        routed = first * tf.expand_dims(dy, axis)
        if self.one_d:
            dx = tf.reshape(routed, (b, 1, wo * pw, c))
        else:
            dx = tf.nn.depth_to_space(tf.reshape(routed, (b, ho, wo, k * c)), ph)
        if (ho * ph, wo * pw) != (h, w):
            dx = tf.pad(dx, [[0, 0], [0, h - ho * ph], [0, w - wo * pw], [0, 0]])
        return tf.squeeze(dx, 1) if self.one_d else dx


def _kernel_for(layer: Any, in_shape: tuple[int, ...]) -> Any:
    L = keras.layers
    if isinstance(layer, L.Conv2D | L.Conv1D) and not isinstance(
        layer, L.DepthwiseConv2D | L.SeparableConv2D | L.Conv2DTranspose
    ):
        return _Conv(layer, in_shape)
    if isinstance(layer, L.Dense):
        return _Dense(layer, in_shape)
    if isinstance(layer, L.ReLU):
        return _Relu(layer, in_shape)
    if isinstance(layer, L.Activation):
        kind, _ = _activation(layer)
        if kind == "relu":
            return _Relu(L.ReLU(), in_shape)
    if isinstance(layer, L.Flatten):
        return _Flatten(layer, in_shape)
    if isinstance(layer, L.GlobalAveragePooling1D | L.GlobalAveragePooling2D):
        return _GlobalAvg(layer, in_shape)
    if isinstance(layer, L.MaxPooling1D | L.MaxPooling2D):
        return _MaxPool(layer, in_shape)
    raise UnsupportedLayer(
        f"layer {layer.name!r} ({type(layer).__name__}) has no builtin-only backward pass; "
        "export with trainable='head' to train only the classifier head on the device"
    )


def _chain(model: keras.Model) -> list[Any]:
    """The model's layers in order, refusing anything that is not a single chain."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    previous = model.inputs[0]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayer(f"model {model.name!r}: one input and one output are required")
    for layer in layers:
        inbound = layer.input
        if isinstance(inbound, list | tuple) or inbound is not previous:
            raise UnsupportedLayer(
                f"model {model.name!r}: layer {layer.name!r} is not fed by the layer before "
                "it (only sequential chains can be exported)"
            )
        previous = layer.output
    return layers


def flex_ops(ops: tuple[str, ...] | list[str]) -> list[str]:
    """The Flex (TensorFlow-delegate) operators in an op list."""
    return sorted({op for op in ops if op.startswith("Flex") or op == "DELEGATE"})


def _op_names(model: bytes) -> tuple[str, ...]:
    """Every operator used by any subgraph (each signature is its own subgraph)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    used = set()
    for subgraph in parsed.subgraphs:
        for op in subgraph.operators or []:
            code = parsed.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin == schema.BuiltinOperator.CUSTOM:
                custom = code.customCode
                used.add(custom.decode() if isinstance(custom, bytes) else str(custom))
            else:
                used.add(names.get(builtin, f"BUILTIN_{builtin}"))
    return tuple(sorted(used))


def export_trainable_tflite(
    model: keras.Model,
    *,
    batch_size: int = 16,
    trainable: Trainable = "all",
) -> TrainableExport:
    """Convert ``model`` into a trainable TFLite model with builtin ops only.

    Parameters
    ----------
    model : keras.Model
        A single-input, single-output chain ending in a Dense head that outputs logits.
    batch_size : int
        Static batch size of the ``train`` and ``infer`` signatures.
    trainable : {"all", "head"}
        Train every layer (each must have a builtin backward: Conv1D/2D, Dense, ReLU,
        max/average pooling, Flatten), or only the final Dense head on top of a frozen
        backbone of any TFLite-convertible layers.

    Returns
    -------
    TrainableExport

    Raises
    ------
    UnsupportedLayer
        Naming the layer that cannot be trained with builtin ops.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if trainable not in ("all", "head"):
        raise ValueError(f"trainable must be 'all' or 'head', got {trainable!r}")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    layers = _chain(model) if trainable == "all" else None
    if trainable == "head":
        head = model.layers[-1]
        if not isinstance(head, keras.layers.Dense):
            raise UnsupportedLayer(f"model {model.name!r}: the last layer must be a Dense head")
        backbone = keras.Model(model.inputs, head.input)
        layers = [head]
        feature_shape = tuple(int(d) for d in head.input.shape[1:])
    else:
        backbone, feature_shape = None, input_shape
    assert layers is not None

    kernels, shape = [], feature_shape
    for layer in layers:
        kernel = _kernel_for(layer, shape)
        kernels.append(kernel)
        shape = kernel.out_shape
    if len(shape) != 1:
        raise UnsupportedLayer(f"model {model.name!r} must output (batch, classes) logits")
    num_classes = shape[0]

    all_weights = model.weights
    train_refs = [w for layer in layers for w in layer.weights]
    index_of = {id(w): i for i, w in enumerate(all_weights)}
    trainable_indices = tuple(index_of[id(w)] for w in train_refs)
    weight_shapes = tuple(tuple(int(d) for d in w.shape) for w in all_weights)

    module = _TrainModule(
        kernels, [w.numpy() for w in train_refs], backbone, batch_size, input_shape, num_classes
    )
    data = _convert(module)
    ops = _op_names(data)
    flex = flex_ops(ops)
    if flex:  # the converter is told builtins only; this guards against a silent change
        raise RuntimeError(f"the trainable model still needs Flex ops: {flex}")
    return TrainableExport(
        model=data,
        batch_size=batch_size,
        input_shape=input_shape,
        num_classes=num_classes,
        weight_shapes=weight_shapes,
        trainable_indices=trainable_indices,
        trainable=trainable,
        ops=ops,
    )


class _TrainModule(tf.Module):
    def __init__(
        self,
        kernels: list[Any],
        initial: list[np.ndarray],
        backbone: keras.Model | None,
        batch: int,
        input_shape: tuple[int, ...],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.kernels = kernels
        self.backbone = backbone
        self.batch, self.k = batch, num_classes
        self.w = [tf.Variable(a, name=f"w{i:02d}") for i, a in enumerate(initial)]
        self.anchor = [tf.Variable(a, name=f"anchor{i:02d}") for i, a in enumerate(initial)]
        self.m = [tf.Variable(np.zeros_like(a), name=f"m{i:02d}") for i, a in enumerate(initial)]
        x_spec = tf.TensorSpec((batch, *input_shape), tf.float32, name="x")
        scalar = lambda n: tf.TensorSpec((), tf.float32, name=n)  # noqa: E731
        self.train = tf.function(
            self._train,
            input_signature=[
                x_spec,
                tf.TensorSpec((batch,), tf.int32, name="y"),
                tf.TensorSpec((batch,), tf.float32, name="w"),
                scalar("lr"),
                scalar("mu"),
                scalar("beta"),
            ],
        )
        self.infer = tf.function(self._infer, input_signature=[x_spec])
        self.get_weights = tf.function(self._get_weights, input_signature=[])
        self.set_weights = tf.function(
            self._set_weights,
            input_signature=[
                tf.TensorSpec(a.shape, tf.float32, name=f"w{i:02d}") for i, a in enumerate(initial)
            ],
        )

    def _features(self, x: tf.Tensor) -> tf.Tensor:
        return x if self.backbone is None else self.backbone(x, training=False)

    def _params(self) -> list[list[tf.Tensor]]:
        out, i = [], 0
        for kernel in self.kernels:
            out.append([self.w[j].read_value() for j in range(i, i + kernel.n_params)])
            i += kernel.n_params
        return out

    def _forward(self, x: tf.Tensor) -> tuple[tf.Tensor, list[Any], list[list[tf.Tensor]]]:
        params = self._params()
        caches = []
        h = self._features(x)
        for kernel, p in zip(self.kernels, params, strict=True):
            h, cache = kernel.forward(h, p)
            caches.append(cache)
        return h, caches, params

    def _train(
        self,
        x: tf.Tensor,
        y: tf.Tensor,
        w: tf.Tensor,
        lr: tf.Tensor,
        mu: tf.Tensor,
        beta: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        logits, caches, params = self._forward(x)
        onehot = tf.one_hot(y, self.k, dtype=tf.float32)
        logp = tf.nn.log_softmax(logits)
        weights = tf.reshape(w, (self.batch, 1))
        loss = -tf.reduce_sum(weights * onehot * logp)
        d = weights * (tf.exp(logp) - onehot)
        grads: list[tf.Tensor] = []
        for i in range(len(self.kernels) - 1, -1, -1):
            d, g = self.kernels[i].backward(d, caches[i], params[i], need_dx=i > 0)
            grads = g + grads
        for var, anchor, m, g in zip(self.w, self.anchor, self.m, grads, strict=True):
            g = g + mu * (var - anchor)
            m_new = beta * m + g
            m.assign(m_new)
            var.assign_sub(lr * m_new)
        return {"loss": loss}

    def _infer(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        logits, _, _ = self._forward(x)
        return {"logits": logits}

    def _get_weights(self) -> dict[str, tf.Tensor]:
        return {f"w{i:02d}": v.read_value() for i, v in enumerate(self.w)}

    def _set_weights(self, *values: tf.Tensor) -> dict[str, tf.Tensor]:
        for var, anchor, m, value in zip(self.w, self.anchor, self.m, values, strict=True):
            var.assign(value)
            anchor.assign(value)
            m.assign(tf.zeros_like(value))
        return {"ok": tf.constant(1, tf.int32)}


def _convert(module: _TrainModule) -> bytes:
    from fedlab.optimize.convert import _captured_stderr

    signatures = {
        "train": module.train.get_concrete_function(),
        "infer": module.infer.get_concrete_function(),
        "get_weights": module.get_weights.get_concrete_function(),
        "set_weights": module.set_weights.get_concrete_function(),
    }
    with tempfile.TemporaryDirectory() as folder:
        tf.saved_model.save(module, folder, signatures=signatures)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            folder, signature_keys=list(signatures)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        with _captured_stderr() as log:
            try:
                data = converter.convert()
            except Exception as exc:
                log.seek(0)
                raise RuntimeError(
                    f"TFLite conversion with builtin ops failed: {exc}\n"
                    f"converter log:\n{log.read()}"
                ) from exc
    return bytes(data)
