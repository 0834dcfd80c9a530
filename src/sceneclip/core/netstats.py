"""Bytes and requests GDAL fetched over HTTP, from GDAL's own network statistics.

rasterio has no binding for ``VSINetworkStatsGetAsSerializedJSON``, so it is called through ctypes on the
libgdal that rasterio already loaded. GDAL reads ``CPL_VSIL_NETWORK_STATS_ENABLED`` once, before the first
network access, so :func:`enable` must run early (the handler module calls it at import).
Where the library cannot be found (non-Linux), figures are None rather than guesses.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass
from typing import Any

_WARM_LIBGDAL_CACHE: dict[str, Any] = {}


def enable() -> None:
    """Turn on GDAL's network statistics; GDAL reads the option once, before its first network access."""
    os.environ.setdefault("CPL_VSIL_NETWORK_STATS_ENABLED", "YES")


def _libgdal() -> Any | None:
    if "lib" in _WARM_LIBGDAL_CACHE:
        return _WARM_LIBGDAL_CACHE["lib"]
    lib = None
    try:
        import rasterio  # loads libgdal

        # pyogrio bundles a second libgdal; the statistics that matter are those of rasterio's copy.
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgdal" in line and line.split()[-1].startswith("/")}
        ours = os.path.dirname(os.path.dirname(rasterio.__file__))
        preferred = sorted(p for p in paths if p.startswith(os.path.join(ours, "rasterio")))
        path = (preferred or sorted(paths) or [None])[0]
        if path:
            lib = ctypes.CDLL(path)
            lib.VSINetworkStatsGetAsSerializedJSON.restype = ctypes.c_void_p
            lib.VSINetworkStatsGetAsSerializedJSON.argtypes = [ctypes.c_void_p]
            lib.VSIFree.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        lib = None
    _WARM_LIBGDAL_CACHE["lib"] = lib
    return lib


@dataclass(frozen=True)
class NetworkStats:
    """Bytes and requests GDAL fetched over HTTP since the last :func:`reset`."""
    bytes_fetched: int | None
    requests: int | None


def reset() -> None:
    """Zero GDAL's network counters (done before every clip, so each record counts its own bytes)."""
    lib = _libgdal()
    if lib is not None:
        lib.VSINetworkStatsReset()


def clear_curl_cache() -> None:
    """Forget every /vsicurl/ and /vsis3/ cached byte and file size (``VSICurlClearCache``).

    Called before each clip so that (a) a key overwritten since the last read is never served stale in a
    warm container, and (b) the bytes counted for a clip are the bytes that clip needs, not what an earlier
    region happened to leave in the cache.
    """
    lib = _libgdal()
    if lib is not None:
        lib.VSICurlClearCache()


def _stats_json() -> dict[str, Any] | None:
    """GDAL's statistics document since the last :func:`reset`; None when they are not available."""
    lib = _libgdal()
    if lib is None or os.environ.get("CPL_VSIL_NETWORK_STATS_ENABLED", "").upper() not in ("YES", "TRUE", "ON", "1"):
        return None
    ptr = lib.VSINetworkStatsGetAsSerializedJSON(None)
    try:
        return json.loads(ctypes.string_at(ptr).decode()) if ptr else {}
    finally:
        if ptr:
            lib.VSIFree(ptr)


def _totals(methods: dict[str, Any]) -> tuple[int, int]:
    return (sum(int(m.get("downloaded_bytes", 0)) for m in methods.values()),
            sum(int(m.get("count", 0)) for m in methods.values()))


def snapshot() -> NetworkStats:
    """Totals since the last :func:`reset`, all handlers and methods."""
    data = _stats_json()
    if data is None:
        return NetworkStats(None, None)
    return NetworkStats(*_totals(data.get("methods", {})))


def by_file(paths: list[str]) -> dict[str, NetworkStats]:
    """Bytes and requests since the last :func:`reset` for each of ``paths`` (the paths GDAL opened, e.g. the
    sources of a mosaic). GDAL files a request under the file's entry, except the size probe of a /vsicurl/ URL
    (its ``Stat`` action), which is listed under the action: both are counted."""
    data = _stats_json()
    if data is None:
        return {p: NetworkStats(None, None) for p in paths}
    sums = {p: [0, 0] for p in paths}
    for handler in data.get("handlers", {}).values():
        entries = [handler.get("files", {})] + [a.get("files", {}) for a in handler.get("actions", {}).values()]
        for files in entries:
            for path in sums.keys() & files.keys():
                got = _totals(files[path].get("methods", {}))
                sums[path][0] += got[0]
                sums[path][1] += got[1]
    return {p: NetworkStats(b, r) for p, (b, r) in sums.items()}
