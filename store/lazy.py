"""A module proxy imported on first attribute access, so light commands (``p2pz direction list``) do not pay
for numpy and friends they never touch."""

from __future__ import annotations

import importlib


class LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


numpy = LazyModule("numpy")
