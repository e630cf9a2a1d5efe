"""Comparing results of the same math computed in another order (batched vs one at a time, other batch sizes).

Such results differ by rounding only, and rounding scales with the magnitude of the values (and varies with the
CPU and the BLAS build), so they are compared with a tolerance relative to the tensors' largest magnitude, not
an absolute one that holds on one machine and fails on the next.
"""

from __future__ import annotations

import numpy as np


def assert_close_relative(actual, expected, rel: float) -> None:
    """max |actual − expected| ≤ rel · max |expected| (tensors or arrays of one shape)."""
    a = np.asarray(actual.detach().cpu().double() if hasattr(actual, "detach") else actual, dtype=np.float64)
    e = np.asarray(expected.detach().cpu().double() if hasattr(expected, "detach") else expected, dtype=np.float64)
    assert a.shape == e.shape, f"shapes differ: {a.shape} vs {e.shape}"
    scale = float(np.abs(e).max()) if e.size else 0.0
    err = float(np.abs(a - e).max()) if e.size else 0.0
    assert err <= rel * scale, f"max difference {err:.3g} exceeds {rel:g} × max magnitude {scale:.3g}"
