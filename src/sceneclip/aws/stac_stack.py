"""``SCENECLIP_STAC_STACK=true``: a STAC Item's selected assets as one multi-band COG per region.

The glue around :func:`sceneclip.core.clip.clip_stack_to_cog`:

* :func:`stack_job` — one :class:`~sceneclip.aws.jobs.ClipJob` per region whose members are the HEADed
  assets in ``SCENECLIP_STAC_ASSETS`` order. The record's scene is the Item (``stac://collection/id``); the
  job's ``key`` is ``<the first asset's folder>/<item id>-stack.tif``, so ``SCENECLIP_OUTPUT_KEY`` names the
  stack as it names any output; its ``etag`` joins the members' ETags, so the idempotency key (with the
  Item edition and the configuration hash, which carries ``stac_stack``) changes when any member does.
* :func:`read_stack` — the read, with every member pinned to the version HEADed: each unversioned member's
  reads carry its own ``If-Match`` (GDAL takes that header from the configuration at request time, so the
  per-member options are set around each member's open and each of its chunk reads, never left to chance:
  every member sets the same keys).
"""

from __future__ import annotations

import contextlib
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from sceneclip.aws.jobs import ClipJob, StackMember
from sceneclip.aws.s3 import SceneObject, gdal_source
from sceneclip.aws.stac_events import item_scene
from sceneclip.core import netstats
from sceneclip.core.gdalenv import non_cached_option
from sceneclip.core.naming import slug
from sceneclip.core.stac_assets import AssetRef

# The per-member options' neutral values: a member without pinning still sets them, so none leaks from the
# member read before it.
NEUTRAL_OPTIONS = {"GDAL_HTTP_HEADERS": "", "CPL_VSIL_CURL_USE_HEAD": "YES"}
# STAC fields that say an asset holds classes or flags, not measurements (interpolating them invents values).
CATEGORICAL_FIELDS = ("classification:classes", "classification:bitfields")
MASK_ROLES = ("data-mask", "cloud", "cloud-shadow", "snow-ice", "water-mask", "land-water", "saturation")


def is_categorical(asset: Mapping[str, Any]) -> bool:
    """Whether the source Item says the asset holds classes (the classification extension, or a mask role)."""
    if any(name in asset for name in CATEGORICAL_FIELDS):
        return True
    bands = asset.get("raster:bands") if isinstance(asset.get("raster:bands"), list) else []
    if any(isinstance(b, Mapping) and any(name in b for name in CATEGORICAL_FIELDS) for b in bands):
        return True
    return any(role in MASK_ROLES for role in asset.get("roles") or ())


def stack_job(item: Mapping[str, Any], assets: list[tuple[AssetRef, SceneObject]], region: str, *,
              config_hash: str, boundary_version: str, edition: str) -> ClipJob:
    """The region's stack job (see the module docstring for what each field means)."""
    source_assets = item.get("assets") if isinstance(item.get("assets"), Mapping) else {}
    members = tuple(StackMember(a.key, o.bucket, o.key, o.version_id, o.etag, o.size,
                                is_categorical(source_assets.get(a.key) or {}))
                    for a, o in assets)
    first = assets[0][1]
    key = posixpath.join(posixpath.dirname(first.key), f"{slug(str(item.get('id')), keep_slash=False)}-stack.tif")
    modified = max((o.last_modified for _, o in assets if o.last_modified), default=None)
    return ClipJob(first.bucket, key, None, ",".join(m.etag for m in members), sum(m.size for m in members), region,
                   config_hash, boundary_version=boundary_version, last_modified=modified, item_edition=edition,
                   item_scene=item_scene(item), members=members)


@contextlib.contextmanager
def _member_options(options: dict[str, str]) -> Iterator[None]:
    """Set one member's GDAL options in the current environment (the stack's read environment)."""
    from rasterio.env import setenv

    setenv(**options)
    yield


def read_stack(pipeline: Any, job: ClipJob, boundary: Any) -> tuple[Any, Any]:
    """(clip result, network counts) of the job's members stacked onto one grid, read through ``pipeline``'s
    source access (region, payer) of each member's bucket."""
    from sceneclip.core.clip import clip_stack_to_cog
    from sceneclip.core.stack import StackInput

    settings = pipeline.settings
    buckets = sorted({m.bucket for m in job.members})
    non_cached = non_cached_option(*buckets)
    inputs = []
    for m in job.members:
        access = pipeline.access(m.bucket)
        path, extra = gdal_source(access.s3, m.object, expires_s=settings.presign_expires_s, payer=access.payer)
        options = {**NEUTRAL_OPTIONS, **access.gdal_options(), **non_cached, **extra}
        inputs.append(StackInput(path, m.object.uri, m.asset, lambda o=options: _member_options(o), m.categorical))
    first = pipeline.access(job.members[0].bucket)
    with first.rasterio_env(non_cached, pipeline.deadline):
        netstats.clear_curl_cache()
        netstats.reset()
        result = clip_stack_to_cog(inputs, boundary, settings.clip_options(), name=job.scene,
                                   deadline=pipeline.deadline)
        return result, netstats.snapshot()
