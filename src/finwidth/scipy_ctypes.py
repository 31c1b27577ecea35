"""BLAS and LAPACK routines from scipy's Cython tables, called through ctypes.

scipy exports every BLAS/LAPACK routine it links as a C function pointer (``scipy.linalg.cython_blas`` and
``cython_lapack``, a documented interface). Through ctypes, Python can call the routines scipy has no
wrapper for (LAPACK's MRRR stages ``dlarre``/``dlarrv``), or call one with arguments its wrapper does not
allow (a leading dimension, an output of the caller's size). ctypes releases the GIL during the call.
"""

from __future__ import annotations

import ctypes
import threading

__all__ = ["cython_function"]

_lock = threading.Lock()
_cache: dict[tuple[str, str, tuple], object] = {}


def cython_function(table: str, name: str, argtypes: tuple):
    """The routine ``name`` of scipy's ``cython_<table>`` (``table`` "blas" or "lapack") as a ctypes function.

    ``argtypes``: the ctypes types of its arguments, all pointers for Fortran routines (every argument by
    reference); it returns nothing. Raises ImportError, KeyError or AttributeError if scipy does not export it.
    """
    key = (table, name, tuple(argtypes))
    with _lock:
        if key not in _cache:
            import importlib

            caps = importlib.import_module(f"scipy.linalg.cython_{table}").__pyx_capi__
            cap = caps[name]
            api = ctypes.pythonapi
            api.PyCapsule_GetName.restype = ctypes.c_char_p
            api.PyCapsule_GetName.argtypes = [ctypes.py_object]
            api.PyCapsule_GetPointer.restype = ctypes.c_void_p
            api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
            ptr = api.PyCapsule_GetPointer(cap, api.PyCapsule_GetName(cap))
            _cache[key] = ctypes.CFUNCTYPE(None, *argtypes)(ptr)
        return _cache[key]
