"""Translate a Keras model into a *vectorised program*: the same forward pass, evaluated for
K clients at once, each with its own weights.

Two activation layouts keep every op a single fast kernel:

* **conv layout** ``(B, *spatial, K·C)`` — clients are blocks of channels. A convolution
  with per-client filters is then one *grouped* convolution (filter ``(kh, kw, C, K·O)``:
  group *k* reads channels ``[kC, (k+1)C)`` and writes ``[kO, (k+1)O)``) whose gradient
  is built from forward grouped convolutions, so it trains on every CPU (TensorFlow's own
  grouped-convolution gradient exists only in oneDNN: see
  :mod:`~fedlab.federated.vectorized.grouped`); a depthwise convolution is one depthwise
  convolution over ``K·C`` channels, and pooling is untouched.
* **dense layout** ``(K, B, F)`` — a Dense layer is one batched matmul ``(K,B,I)·(K,I,O)``.

``Flatten`` and global pooling move from the first layout to the second. Every model
weight is stored *packed*: tiled K times along one axis (``axis``), or stacked along a new
leading axis (``axis=None``). Padded examples (mask 0) flow through the network but are
excluded from the loss and from batch-norm statistics, so uneven clients are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fedlab._tf import keras, tf
from fedlab.federated.vectorized.grouped import grouped_conv2d

__all__ = ["Packing", "Program", "UnsupportedModel", "compile_program"]

keras_layers = keras.layers
_ELEMENTWISE = {
    "linear",
    "relu",
    "relu6",
    "sigmoid",
    "tanh",
    "gelu",
    "swish",
    "silu",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "exponential",
}


class UnsupportedModel(ValueError):
    """The model has a layer (or a topology) the vectorised trainer cannot run."""


@dataclass(frozen=True, slots=True)
class Packing:
    """How one model weight is stored for K clients.

    ``axis`` is the axis along which the weight is tiled K times (client blocks contiguous),
    or None for a new leading client axis.
    """

    index: int
    shape: tuple[int, ...]
    axis: int | None
    trainable: bool

    def pack(self, weight: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
        """The global weight repeated for ``k`` clients."""
        rank = len(self.shape)
        if self.axis is None:
            return tf.tile(weight[None], tf.concat([[k], tf.ones([rank], tf.int32)], 0))
        multiples = tf.tensor_scatter_nd_update(tf.ones([rank], tf.int32), [[self.axis]], [k])
        return tf.tile(weight, multiples)

    def unpack(self, packed: tf.Tensor) -> tf.Tensor:
        """``(K, *shape)`` from the packed form."""
        if self.axis is None:
            return packed
        axis = self.axis
        dim = self.shape[axis]
        t = tf.reshape(packed, [*self.shape[:axis], -1, dim, *self.shape[axis + 1 :]])
        perm = [axis, *range(axis), *range(axis + 1, len(self.shape) + 1)]
        return tf.transpose(t, perm)

    def per_client(self, values: tf.Tensor) -> tf.Tensor:
        """Per-client values ``(..., K)`` shaped to broadcast against the packed weight,
        ``(..., *broadcast shape)``: leading axes (e.g. one per local step) are kept."""
        rank = len(self.shape)
        lead = tf.shape(values)[:-1]
        if self.axis is None:
            return tf.reshape(values, tf.concat([lead, [-1], tf.ones([rank], tf.int32)], 0))
        repeated = tf.repeat(values, self.shape[self.axis], axis=-1)
        shape = [1] * rank
        shape[self.axis] = -1
        return tf.reshape(repeated, tf.concat([lead, shape], 0))


@dataclass(frozen=True, slots=True)
class Layout:
    """Activation layout between two ops (batch and client counts are dynamic)."""

    kind: str  # "conv" or "dense"
    spatial: tuple[int, ...] = ()  # (H, W) for conv; conv1d uses (1, T)
    channels: int = 0


@dataclass
class Ctx:
    """Per-forward context: the example mask and the training flag."""

    mask: tf.Tensor  # (K, B) float32, 1 for a real example
    training: bool


OpFn = Callable[[tf.Tensor, Sequence[tf.Tensor], Ctx], tuple[tf.Tensor, dict[int, tf.Tensor]]]


@dataclass(frozen=True, slots=True)
class Op:
    """One layer: which weights it reads (positions in ``Program.packings``) and its function."""

    name: str
    weights: tuple[int, ...]
    fn: OpFn


@dataclass(frozen=True, slots=True)
class Program:
    """A vectorised forward pass of a Keras model."""

    model_name: str
    input_shape: tuple[int, ...]
    packings: tuple[Packing, ...]
    ops: tuple[Op, ...]
    input_layout: Layout

    @property
    def trainable(self) -> tuple[int, ...]:
        """Positions of trainable weights."""
        return tuple(i for i, p in enumerate(self.packings) if p.trainable)

    def to_input_layout(self, x: tf.Tensor) -> tf.Tensor:
        """``(K, B, *input_shape)`` examples into the first op's layout."""
        layout = self.input_layout
        if layout.kind == "dense":
            return x
        rank = len(self.input_shape)
        perm = [1, *range(2, rank + 1), 0, rank + 1]  # (B, *spatial, K, C)
        t = tf.transpose(x, perm)
        b = tf.shape(x)[1]
        t = tf.reshape(t, tf.concat([[b], list(layout.spatial), [-1]], 0))
        return t

    def forward(
        self, weights: Sequence[tf.Tensor], x: tf.Tensor, ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        """Logits ``(K, B, classes)`` and updated non-trainable weights (batch-norm stats)."""
        h = self.to_input_layout(x)
        updates: dict[int, tf.Tensor] = {}
        for op in self.ops:
            h, new = op.fn(h, [weights[i] for i in op.weights], ctx)
            for local, value in new.items():
                updates[op.weights[local]] = value
        return h, updates


# -- layer translations ---------------------------------------------------------------------


def _activation(layer: Any, layout: Layout) -> Callable[[tf.Tensor], tf.Tensor]:
    act = getattr(layer, "activation", None)
    if act is None:
        return tf.identity
    name = getattr(act, "__name__", str(act))
    if name in _ELEMENTWISE:
        return act
    if name == "softmax" and layout.kind == "dense":
        return tf.nn.softmax
    raise UnsupportedModel(f"layer {layer.name!r}: activation {name!r} has no vectorised kernel")


def _same_or_valid(layer: Any) -> str:
    padding = str(layer.padding).upper()
    if padding not in ("SAME", "VALID"):
        raise UnsupportedModel(f"layer {layer.name!r}: padding {layer.padding!r} is not supported")
    return padding


def _out_len(size: int, kernel: int, stride: int, padding: str) -> int:
    return -(-size // stride) if padding == "SAME" else (size - kernel) // stride + 1


class _Builder:
    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.positions = {id(v): i for i, v in enumerate(model.weights)}
        # Keras decides trainability per layer (a frozen layer's variables keep
        # ``trainable=True``), so ask the model.
        self.trainable = {id(v) for v in model.trainable_weights}
        self.packings: dict[int, Packing] = {}
        self.ops: list[Op] = []

    def slot(self, variable: tf.Variable, axis: int | None) -> int:
        index = self.positions[id(variable)]
        self.packings[index] = Packing(
            index, tuple(variable.shape), axis, id(variable) in self.trainable
        )
        return index

    def add(
        self, layer: Any, variables: Sequence[tuple[tf.Variable, int | None]], fn: OpFn
    ) -> None:
        self.ops.append(Op(layer.name, tuple(self.slot(v, a) for v, a in variables), fn))


def _check_plain_conv(layer: Any) -> None:
    if layer.data_format != "channels_last":
        raise UnsupportedModel(f"layer {layer.name!r}: only channels_last is supported")
    if any(d != 1 for d in layer.dilation_rate):
        raise UnsupportedModel(f"layer {layer.name!r}: dilated convolutions are not supported")
    if getattr(layer, "groups", 1) != 1:
        raise UnsupportedModel(f"layer {layer.name!r}: grouped convolutions are not supported")


def _conv(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind != "conv":
        raise UnsupportedModel(f"layer {layer.name!r}: convolution after a flat layer")
    _check_plain_conv(layer)
    padding = _same_or_valid(layer)
    one_d = isinstance(layer, keras_layers.Conv1D)
    kernel = tuple(layer.kernel_size)
    strides = tuple(layer.strides)
    if one_d:
        kernel, strides = (1, kernel[0]), (1, strides[0])
    act = _activation(layer, layout)
    use_bias = layer.use_bias

    channels, filters = layout.channels, int(layer.filters)

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        f = w[0][None] if one_d else w[0]
        out = grouped_conv2d(
            h,
            f,
            spatial=layout.spatial,
            kernel_size=kernel,
            strides=strides,
            padding=padding,
            channels=channels,
            filters=filters,
        )
        if use_bias:
            out = out + w[1]
        return act(out), {}

    variables = [(layer.kernel, len(layer.kernel.shape) - 1)]
    if use_bias:
        variables.append((layer.bias, 0))
    b.add(layer, variables, fn)
    spatial = tuple(
        _out_len(s, k, st, padding)
        for s, k, st in zip(layout.spatial, kernel, strides, strict=True)
    )
    return Layout("conv", spatial, int(layer.filters))


def _depthwise(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind != "conv" or len(layout.spatial) != 2:
        raise UnsupportedModel(
            f"layer {layer.name!r}: depthwise convolution needs 2-D feature maps"
        )
    _check_plain_conv(layer)
    padding = _same_or_valid(layer)
    strides = tuple(layer.strides)
    act = _activation(layer, layout)
    use_bias = layer.use_bias

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        out = tf.nn.depthwise_conv2d(h, w[0], strides=[1, *strides, 1], padding=padding)
        if use_bias:
            out = out + w[1]
        return act(out), {}

    variables = [(layer.depthwise_kernel, 2)]
    if use_bias:
        variables.append((layer.bias, 0))
    b.add(layer, variables, fn)
    spatial = tuple(
        _out_len(s, k, st, padding)
        for s, k, st in zip(layout.spatial, layer.kernel_size, strides, strict=True)
    )
    return Layout("conv", spatial, layout.channels * int(layer.depth_multiplier))


def _dense(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind != "dense":
        raise UnsupportedModel(
            f"layer {layer.name!r}: Dense on a {len(layout.spatial) + 1}-D feature map "
            "(add Flatten or global pooling before it)"
        )
    act = _activation(layer, layout)
    use_bias = layer.use_bias

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        out = tf.matmul(h, w[0])
        if use_bias:
            out = out + w[1][:, None, :]
        return act(out), {}

    variables: list[tuple[tf.Variable, int | None]] = [(layer.kernel, None)]
    if use_bias:
        variables.append((layer.bias, None))
    b.add(layer, variables, fn)
    return Layout("dense", (), int(layer.units))


def _pool(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind != "conv":
        raise UnsupportedModel(f"layer {layer.name!r}: pooling after a flat layer")
    if layer.data_format != "channels_last":
        raise UnsupportedModel(f"layer {layer.name!r}: only channels_last is supported")
    padding = _same_or_valid(layer)
    one_d = len(layer.pool_size) == 1
    size = (1, layer.pool_size[0]) if one_d else tuple(layer.pool_size)
    strides = (1, layer.strides[0]) if one_d else tuple(layer.strides)
    pool = tf.nn.max_pool2d if "Max" in type(layer).__name__ else tf.nn.avg_pool2d

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        return pool(h, ksize=[1, *size, 1], strides=[1, *strides, 1], padding=padding), {}

    b.add(layer, [], fn)
    spatial = tuple(
        _out_len(s, k, st, padding) for s, k, st in zip(layout.spatial, size, strides, strict=True)
    )
    return Layout("conv", spatial, layout.channels)


def _to_dense(h: tf.Tensor, layout: Layout) -> tf.Tensor:
    """(B, *spatial, K·C) → (K, B, *spatial, C)."""
    b = tf.shape(h)[0]
    t = tf.reshape(h, tf.concat([[b], list(layout.spatial), [-1, layout.channels]], 0))
    rank = len(layout.spatial)
    return tf.transpose(t, [rank + 1, 0, *range(1, rank + 1), rank + 2])


def _flatten(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind == "dense":
        b.add(layer, [], lambda h, w, ctx: (h, {}))
        return layout
    size = layout.channels
    for s in layout.spatial:
        size *= s

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        t = _to_dense(h, layout)
        shape = tf.shape(t)
        return tf.reshape(t, [shape[0], shape[1], size]), {}

    b.add(layer, [], fn)
    return Layout("dense", (), size)


def _global_pool(b: _Builder, layer: Any, layout: Layout) -> Layout:
    if layout.kind != "conv":
        raise UnsupportedModel(f"layer {layer.name!r}: global pooling after a flat layer")
    if getattr(layer, "keepdims", False):
        raise UnsupportedModel(f"layer {layer.name!r}: keepdims=True is not supported")
    reduce = tf.reduce_max if "Max" in type(layer).__name__ else tf.reduce_mean
    axes = list(range(1, len(layout.spatial) + 1))
    channels = layout.channels

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        pooled = reduce(h, axis=axes)  # (B, K·C)
        b_ = tf.shape(pooled)[0]
        return tf.transpose(tf.reshape(pooled, [b_, -1, channels]), [1, 0, 2]), {}

    b.add(layer, [], fn)
    return Layout("dense", (), channels)


def _relu_layer(b: _Builder, layer: Any, layout: Layout) -> Layout:
    max_value = None if layer.max_value is None else float(layer.max_value)
    slope, threshold = float(layer.negative_slope), float(layer.threshold)

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        return keras.backend.relu(h, alpha=slope, max_value=max_value, threshold=threshold), {}

    b.add(layer, [], fn)
    return layout


def _activation_layer(b: _Builder, layer: Any, layout: Layout) -> Layout:
    act = _activation(layer, layout)
    b.add(layer, [], lambda h, w, ctx: (act(h), {}))
    return layout


def _client_view(h: tf.Tensor, layout: Layout) -> tuple[tf.Tensor, list[int]]:
    """Reshape to (..., K, C) in conv layout; returns the tensor and its reduce axes for BN."""
    if layout.kind == "dense":
        return h, [1]  # (K, B, C): statistics over B
    b = tf.shape(h)[0]
    t = tf.reshape(h, tf.concat([[b], list(layout.spatial), [-1, layout.channels]], 0))
    return t, list(range(len(layout.spatial) + 1))  # over B and spatial


def _batch_norm(b: _Builder, layer: Any, layout: Layout) -> Layout:
    axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
    rank = len(layout.spatial) + (2 if layout.kind == "conv" else 1)
    if axis not in (-1, [rank - 1], rank - 1, [-1]):
        raise UnsupportedModel(f"layer {layer.name!r}: batch norm must normalize the last axis")
    if getattr(layer, "renorm", False) or getattr(layer, "virtual_batch_size", None):
        raise UnsupportedModel(f"layer {layer.name!r}: renorm/virtual batches are not supported")
    eps, momentum = float(layer.epsilon), float(layer.momentum)
    # The fused kernel (4-D inputs) updates the moving variance with Bessel's correction.
    bessel = bool(getattr(layer, "fused", False))
    center, scale = layer.center, layer.scale
    train_mode = bool(layer.trainable)
    channels = layout.channels
    spatial_size = 1
    for s in layout.spatial:
        spatial_size *= s

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        i = 0
        gamma = beta = None
        if scale:
            gamma, i = w[i], i + 1
        if center:
            beta, i = w[i], i + 1
        moving_mean, moving_var = w[i], w[i + 1]
        t, axes = _client_view(h, layout)

        def per_client(v: tf.Tensor) -> tf.Tensor:  # packed (K·C,) or (K, C) → broadcastable
            v = tf.reshape(v, [-1, channels])
            return v[:, None, :] if layout.kind == "dense" else v

        updates: dict[int, tf.Tensor] = {}
        if ctx.training and train_mode:
            if layout.kind == "dense":
                m = ctx.mask[:, :, None]  # (K, B, 1)
            else:
                m = tf.transpose(ctx.mask)  # (B, K)
                m = tf.reshape(
                    m, tf.concat([[tf.shape(m)[0]], [1] * len(layout.spatial), [-1, 1]], 0)
                )
            count = tf.reduce_sum(m, axis=axes, keepdims=True) * spatial_size
            safe = tf.maximum(count, 1.0)
            mean = tf.reduce_sum(t * m, axis=axes, keepdims=True) / safe
            var = tf.reduce_sum(tf.square(t - mean) * m, axis=axes, keepdims=True) / safe
            flat_mean = tf.reshape(mean, [-1, channels])
            flat_var = tf.reshape(var, [-1, channels])
            n = tf.reshape(count, [-1, 1])
            if bessel:
                flat_var_update = flat_var * n / tf.maximum(n - 1.0, 1.0)
            else:
                flat_var_update = flat_var
            active = tf.cast(n > 0, tf.float32)
            old_mean = tf.reshape(moving_mean, [-1, channels])
            old_var = tf.reshape(moving_var, [-1, channels])
            decay = (1.0 - momentum) * active
            new_mean = old_mean + decay * (flat_mean - old_mean)
            new_var = old_var + decay * (flat_var_update - old_var)
            updates = {
                i: tf.reshape(new_mean, tf.shape(moving_mean)),
                i + 1: tf.reshape(new_var, tf.shape(moving_var)),
            }
        else:
            mean, var = per_client(moving_mean), per_client(moving_var)
        out = (t - mean) * tf.math.rsqrt(var + eps)
        if gamma is not None:
            out = out * per_client(gamma)
        if beta is not None:
            out = out + per_client(beta)
        return tf.reshape(out, tf.shape(h)), updates

    packing_axis = None if layout.kind == "dense" else 0
    variables = []
    if scale:
        variables.append((layer.gamma, packing_axis))
    if center:
        variables.append((layer.beta, packing_axis))
    variables += [(layer.moving_mean, packing_axis), (layer.moving_variance, packing_axis)]
    b.add(layer, variables, fn)
    return layout


def _layer_norm(b: _Builder, layer: Any, layout: Layout) -> Layout:
    axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
    rank = len(layout.spatial) + (2 if layout.kind == "conv" else 1)
    if axis not in (-1, [-1], rank - 1, [rank - 1]):
        raise UnsupportedModel(f"layer {layer.name!r}: layer norm must normalize the last axis")
    eps = float(layer.epsilon)
    channels = layout.channels
    scale, center = bool(layer.scale), bool(layer.center)

    def fn(
        h: tf.Tensor, w: Sequence[tf.Tensor], ctx: Ctx
    ) -> tuple[tf.Tensor, dict[int, tf.Tensor]]:
        t, _ = _client_view(h, layout)
        mean, var = tf.nn.moments(t, axes=[-1], keepdims=True)
        out = (t - mean) * tf.math.rsqrt(var + eps)

        def view(v: tf.Tensor) -> tf.Tensor:
            v = tf.reshape(v, [-1, channels])
            return v[:, None, :] if layout.kind == "dense" else v

        i = 0
        if scale:
            out, i = out * view(w[0]), 1
        if center:
            out = out + view(w[i])
        return tf.reshape(out, tf.shape(h)), {}

    packing_axis = None if layout.kind == "dense" else 0
    variables = []
    if layer.scale:
        variables.append((layer.gamma, packing_axis))
    if layer.center:
        variables.append((layer.beta, packing_axis))
    b.add(layer, variables, fn)
    return layout


_TRANSLATIONS: list[tuple[type, Callable[[_Builder, Any, Layout], Layout]]] = [
    (keras_layers.DepthwiseConv2D, _depthwise),  # before Conv2D: it subclasses it
    (keras_layers.Conv2D, _conv),
    (keras_layers.Conv1D, _conv),
    (keras_layers.Dense, _dense),
    (keras_layers.MaxPooling2D, _pool),
    (keras_layers.AveragePooling2D, _pool),
    (keras_layers.MaxPooling1D, _pool),
    (keras_layers.AveragePooling1D, _pool),
    (keras_layers.GlobalAveragePooling2D, _global_pool),
    (keras_layers.GlobalAveragePooling1D, _global_pool),
    (keras_layers.GlobalMaxPooling2D, _global_pool),
    (keras_layers.GlobalMaxPooling1D, _global_pool),
    (keras_layers.Flatten, _flatten),
    (keras_layers.ReLU, _relu_layer),
    (keras_layers.Activation, _activation_layer),
    (keras_layers.BatchNormalization, _batch_norm),
    (keras_layers.LayerNormalization, _layer_norm),
]


def _chain(model: keras.Model) -> list[Any]:
    """The model's layers if they form a single chain from the input to the output."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras_layers.InputLayer)]
    previous = model.inputs[0] if len(model.inputs) == 1 else None
    if previous is None or len(model.outputs) != 1:
        raise UnsupportedModel(f"model {model.name!r}: needs exactly one input and one output")
    for layer in layers:
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise UnsupportedModel(f"layer {layer.name!r} is called {len(nodes)} times")
        inputs = tf.nest.flatten(nodes[0].input_tensors)
        if len(inputs) != 1 or inputs[0] is not previous:
            raise UnsupportedModel(
                f"layer {layer.name!r} ({type(layer).__name__}) is not in a simple chain "
                "(residual or multi-input graphs have no vectorised kernel)"
            )
        previous = layer.output
    if previous is not model.outputs[0]:
        raise UnsupportedModel(f"model {model.name!r}: the chain does not end at the output")
    return layers


def compile_program(model: keras.Model) -> Program:
    """Translate ``model`` or raise :class:`UnsupportedModel` naming the first problem.

    Supported: a single chain of Conv1D/Conv2D, DepthwiseConv2D, Dense, max/average and
    global pooling, Flatten, ReLU/Activation, BatchNormalization and LayerNormalization
    (channels-last, no dilation), with logits as output.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    if len(input_shape) == 1:
        layout = Layout("dense", (), input_shape[0])
    elif len(input_shape) == 2:
        layout = Layout("conv", (1, input_shape[0]), input_shape[1])
    elif len(input_shape) == 3:
        layout = Layout("conv", input_shape[:2], input_shape[2])
    else:
        raise UnsupportedModel(f"model {model.name!r}: input shape {input_shape} is not supported")
    input_layout = layout
    builder = _Builder(model)
    for layer in _chain(model):
        for cls, translate in _TRANSLATIONS:
            if isinstance(layer, cls):
                layout = translate(builder, layer, layout)
                break
        else:
            raise UnsupportedModel(
                f"layer {layer.name!r} ({type(layer).__name__}) has no vectorised kernel"
            )
    if layout.kind != "dense":
        raise UnsupportedModel(
            f"model {model.name!r}: output is not a flat (batch, classes) tensor"
        )
    missing = [i for i in range(len(model.weights)) if i not in builder.packings]
    if missing:
        names = [model.weights[i].name for i in missing]
        raise UnsupportedModel(f"model {model.name!r}: weights {names} are not used by any kernel")
    packings = tuple(builder.packings[i] for i in range(len(model.weights)))
    return Program(model.name, input_shape, packings, tuple(builder.ops), input_layout)
