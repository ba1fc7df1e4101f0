"""Reading data-only pickles without running code hidden in them.

`pickle.load` calls whatever callable a file names (`os.system`, `subprocess.Popen`, ...), so a
pickle is a program, not data. `load_data_pickle` reads one with an unpickler that can build only
builtin containers and scalars (dict, list, tuple, set, frozenset, str, bytes, int, float, complex,
bool, None; also `collections.OrderedDict`) and numpy arrays, dtypes and numpy scalars (pickled
by numpy 1 or 2, any protocol). Any other global the file names raises `UnsafePickleError`
naming it, before it is called. The loaded object is then walked once more: an object-dtype array
or any other type is refused too.

Even so, only read pickles the user chose to trust (the converter's `--allow_pickles`): a
data-only pickle can still be huge.
"""

from __future__ import annotations

import _codecs
import builtins
import collections
import os
import pickle
from typing import Any

import numpy as np
import numpy.core.multiarray as _multiarray
import numpy.core.numeric as _numeric


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than data (a callable or a class outside the allowlist)."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    out = {}
    for core in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 spell their pickles differently
        out[(f"{core}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        out[(f"{core}.multiarray", "scalar")] = _multiarray.scalar
        out[(f"{core}.numeric", "_frombuffer")] = _numeric._frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    return out


def _builtin_globals() -> dict[tuple[str, str], Any]:
    out = {}
    for name in ("set", "frozenset", "bytearray", "complex"):
        out[("builtins", name)] = out[("__builtin__", name)] = getattr(builtins, name)  # protocol < 3 says __builtin__
    out[("_codecs", "encode")] = _codecs.encode  # how protocol 2 spells a bytes object
    out[("collections", "OrderedDict")] = collections.OrderedDict
    return out


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_numpy_globals(), **_builtin_globals()}
DATA_TYPES = (dict, collections.OrderedDict, list, tuple, set, frozenset, str, bytes, bytearray,
              int, float, complex, bool, type(None))


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused to load {module}.{name}: only numpy arrays and builtin "
                                    f"containers/scalars may be unpickled") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent object reference: only plain data may be unpickled")


def load_data_pickle(path: str | os.PathLike) -> Any:
    """Unpickles the file at `path` with the restricted unpickler (see the module docstring)."""
    with open(path, "rb") as f:
        obj = _DataUnpickler(f).load()
    check_data(obj)
    return obj


def check_data(obj: Any) -> None:
    """Raises UnsafePickleError unless `obj` is builtin containers/scalars and numeric numpy data."""
    seen, todo = set(), [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (np.ndarray, np.generic)):
            if item.dtype.hasobject:
                raise UnsafePickleError("refused a numpy array of Python objects: only numeric/string arrays")
            continue
        if type(item) not in DATA_TYPES:
            raise UnsafePickleError(f"refused an object of type {type(item).__module__}.{type(item).__qualname__}")
        if isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
