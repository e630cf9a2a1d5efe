"""Vector (de)serialization: safetensors bytes with dtype and shape inside, bit-exact both ways.

numpy only (no torch import), so listing commands stay light. Every read validates what it gets:
a single tensor named ``v``, an allowed dtype, the expected shape when one is given, and finite values.
"""

from __future__ import annotations

from p2pz.store.lazy import numpy as np

def _allowed():
    return (np.float32, np.float16, np.float64)


class VectorError(ValueError):
    """A vector is malformed: wrong container, dtype, shape or non-finite values."""


def to_bytes(array: np.ndarray) -> bytes:
    """Serialize one array; refuses NaN/Inf and non-float dtypes."""
    from safetensors.numpy import save as _st_save  # lazy: safetensors

    array = np.ascontiguousarray(array)
    if array.dtype.type not in _allowed():
        raise VectorError(f"vectors must be float16/32/64, got {array.dtype}")
    if not np.isfinite(array).all():
        raise VectorError("vector contains NaN or Inf; refusing to store it")
    return _st_save({"v": array})


def from_bytes(data: bytes, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Deserialize and validate one array. ``shape`` may use None for a free dimension."""
    from safetensors import SafetensorError  # lazy: safetensors
    from safetensors.numpy import load as _st_load  # lazy: safetensors

    try:
        tensors = _st_load(bytes(data))
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise VectorError(f"not a valid safetensors vector: {exc}") from None
    if set(tensors) != {"v"}:
        raise VectorError(f"expected one tensor named 'v', found {sorted(tensors)}")
    array = tensors["v"]
    if array.dtype.type not in _allowed():
        raise VectorError(f"vectors must be float16/32/64, got {array.dtype}")
    if shape is not None:
        if len(shape) != array.ndim or any(s is not None and s != a for s, a in zip(shape, array.shape)):
            raise VectorError(f"expected shape {shape}, got {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise VectorError("vector contains NaN or Inf")
    return array
