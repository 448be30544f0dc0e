"""Where the bytes of a ``.tflite`` file go, and how small a deployable file can be made.

A ``.tflite`` file is a flatbuffer: constant buffers (weights, int32 biases, shape
operands), per-tensor quantization arrays (a float32 scale and an **int64** zero point per
channel), strings (tensor names, signature definitions) and the table structure that ties
them together. On a model with millions of weights the buffers are everything; on the
7k–40k-parameter models that fit a microcontroller or a federated sensor fleet, the rest
is several KB, and it is why an int8 *file* is less than 4× smaller than its float32 twin.
:func:`anatomy` measures each part; :func:`strip_strings` removes the strings a runtime
does not need (TFLite's own ``flatbuffer_utils.strip_strings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedlab.optimize.measure import load_tflite

__all__ = ["TFLiteAnatomy", "anatomy", "buffer_offsets", "int8_size_row", "strip_strings"]

_ALIGN = 8  # int64 constants read in place need it
_QUANT_ARRAYS = {"scale": 4, "zeroPoint": 8, "min": 4, "max": 4}


@dataclass(frozen=True, slots=True)
class TFLiteAnatomy:
    """Bytes of one ``.tflite`` file, by what they hold.

    ``structure_bytes`` is the remainder: flatbuffer tables and vtables, tensor shapes,
    operator options, operator codes and alignment padding.
    """

    file_bytes: int
    weight_bytes: int
    quantization_bytes: int
    string_bytes: int
    metadata_bytes: int
    tensors: int
    operators: int
    per_channel_tensors: int

    @property
    def structure_bytes(self) -> int:
        """Everything that is not a buffer, a quantization array, a string or metadata."""
        return (
            self.file_bytes
            - self.weight_bytes
            - self.quantization_bytes
            - self.string_bytes
            - self.metadata_bytes
        )

    @property
    def overhead_bytes(self) -> int:
        """The file minus its weight buffers."""
        return self.file_bytes - self.weight_bytes

    def row(self) -> dict[str, Any]:
        """A table row in KB."""
        kb = 1024
        return {
            "file KB": self.file_bytes / kb,
            "weights KB": self.weight_bytes / kb,
            "quantization KB": self.quantization_bytes / kb,
            "strings KB": self.string_bytes / kb,
            "metadata KB": self.metadata_bytes / kb,
            "structure KB": self.structure_bytes / kb,
            "tensors": self.tensors,
            "operators": self.operators,
        }


def _model(data: bytes) -> Any:
    """The flatbuffer as TFLite's mutable Python objects (as ``_op_names`` reads it too)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(bytearray(data))


def _length(value: Any) -> int:
    return 0 if value is None else len(value)


def anatomy(model: bytes | str | Path) -> TFLiteAnatomy:
    """Measure where the bytes of a ``.tflite`` model go.

    Parameters
    ----------
    model : bytes, str or Path
        The flatbuffer or its path; anything that is not TFLite raises ``ValueError``.
    """
    data = load_tflite(model)
    m = _model(data)
    # Files over 2 GB keep buffers after the flatbuffer, addressed by offset and size.
    buffers = [_length(b.data) or int(b.size or 0) for b in m.buffers or []]
    metadata_buffers = {md.buffer for md in m.metadata or []}
    metadata = sum(buffers[i] for i in metadata_buffers)
    metadata += sum(_length(md.name) for md in m.metadata or [])
    weights = sum(size for i, size in enumerate(buffers) if i not in metadata_buffers)
    quant = strings = tensors = operators = per_channel = 0
    strings += _length(m.description)
    for subgraph in m.subgraphs or []:
        strings += _length(subgraph.name)
        operators += _length(subgraph.operators)
        for tensor in subgraph.tensors or []:
            tensors += 1
            strings += _length(tensor.name)
            q = tensor.quantization
            if q is None:
                continue
            quant += sum(_length(getattr(q, k)) * size for k, size in _QUANT_ARRAYS.items())
            per_channel += int(_length(q.scale) > 1)
    for signature in m.signatureDefs or []:
        strings += _length(signature.signatureKey)
        for tensor_map in [*(signature.inputs or []), *(signature.outputs or [])]:
            strings += _length(tensor_map.name)
    return TFLiteAnatomy(
        file_bytes=len(data),
        weight_bytes=weights,
        quantization_bytes=quant,
        string_bytes=strings,
        metadata_bytes=metadata,
        tensors=tensors,
        operators=operators,
        per_channel_tensors=per_channel,
    )


def strip_strings(model: bytes | str | Path) -> bytes:
    """The model without tensor names, subgraph names, description or signature definitions.

    What TFLite's ``flatbuffer_utils.strip_strings`` removes: nothing the interpreter needs
    to run the graph (inputs and outputs are addressed by index), but the model loses its
    signature runners and readable tensor names. Use it for the file that ships, keep the
    named one for debugging. Constant buffers are kept 8-byte aligned (TFLite's Python
    object API alone would pack them at any byte offset; the converter's are 4-aligned).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    class _AlignedBuffer(schema.BufferT):
        def Pack(self, builder: Any) -> Any:
            data = None
            if self.data is not None and len(self.data):
                raw = bytes(bytearray(self.data))
                builder.StartVector(1, len(raw), _ALIGN)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    m = _model(load_tflite(model))
    if any(b.offset for b in m.buffers or []):
        raise ValueError(
            "the model keeps its buffers after the flatbuffer (a file over 2 GB): "
            "strip_strings would drop them"
        )
    flatbuffer_utils.strip_strings(m)
    aligned = []
    for buffer in m.buffers or []:
        copy = _AlignedBuffer()
        copy.data, copy.offset, copy.size = buffer.data, buffer.offset, buffer.size
        aligned.append(copy)
    m.buffers = aligned
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def buffer_offsets(model: bytes) -> list[int]:
    """File offsets of the non-empty constant buffers (to check their alignment)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(model, 0)
    offsets = []
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        if buffer.DataLength():
            offsets.append(int(buffer._tab.Vector(buffer._tab.Offset(4))))
    return offsets


def int8_size_row(name: str, model: Any, representative: Any) -> dict[str, Any]:
    """Float32 and int8 (int8 I/O) files of one Keras model: sizes and their ratio.

    Cheap enough to sweep model widths and see from which size on the format's fixed costs
    stop mattering. ``weights-only ratio`` is the ceiling of the file ratio: what it would
    be if every byte but the constant buffers were free. Sizes depend on the weight values
    in one way: the converter stores identical constant buffers once, so the all-zero
    biases of an untrained model under-count the file — train it a little first.
    """
    from fedlab.models import count_params
    from fedlab.optimize.convert import to_tflite

    f32 = anatomy(to_tflite(model))
    i8 = anatomy(to_tflite(model, mode="int8", representative=representative, int8_io=True))
    return {
        "model": name,
        "params": count_params(model).total,
        "float32 KB": f32.file_bytes / 1024,
        "int8 KB": i8.file_bytes / 1024,
        "int8 file ratio": f32.file_bytes / i8.file_bytes,
        "weights-only ratio": f32.weight_bytes / i8.weight_bytes,
        "int8 overhead KB": i8.overhead_bytes / 1024,
    }
