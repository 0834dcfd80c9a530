"""sceneclip: clip satellite scenes to region boundaries and write verified Cloud Optimized GeoTIFFs.

The library API is re-exported here lazily (PEP 562): ``from sceneclip import run_clip`` works, while
``import sceneclip.aws.handler`` (the Lambda's INIT phase) still loads neither rasterio nor geopandas until a
clip needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → module that defines it
_LAZY = {
    "ClipOptions": "sceneclip.core.plan",
    "ClipPlan": "sceneclip.core.plan",
    "RasterInfo": "sceneclip.core.plan",
    "plan_clip": "sceneclip.core.plan",
    "ClipOutput": "sceneclip.core.output",
    "ClipResult": "sceneclip.core.clip",
    "clip_to_cog": "sceneclip.core.clip",
    "run_clip": "sceneclip.core.clip",
    "read_clip": "sceneclip.core.read",
    "ClipArray": "sceneclip.core.read",
    "Boundary": "sceneclip.core.geometry",
    "VerificationRecord": "sceneclip.core.records",
    "make_item": "sceneclip.core.stac",
    "load_boundary": "sceneclip.tools.vectors",
    "run_batch": "sceneclip.tools.batch",
    "SceneclipError": "sceneclip.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sceneclip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from sceneclip.core.clip import ClipResult, clip_to_cog, run_clip
    from sceneclip.core.geometry import Boundary
    from sceneclip.core.output import ClipOutput
    from sceneclip.core.plan import ClipOptions, ClipPlan, RasterInfo, plan_clip
    from sceneclip.core.read import ClipArray, read_clip
    from sceneclip.core.records import VerificationRecord
    from sceneclip.core.stac import make_item
    from sceneclip.errors import SceneclipError
    from sceneclip.tools.batch import run_batch
    from sceneclip.tools.vectors import load_boundary
