"""The boundary store: region boundaries compiled once by tooling, read piecemeal by the Lambda function.

Layout at a store URI (a local directory or ``s3://bucket/prefix``)::

    index.json                      format, version, CRS (WKT), region field, source, created_at and, per
                                    region id: bbox (store CRS), sha256 of its WKB, key of its WKB, parts
    regions/<slug>.<sha256>.wkb     one repaired (Multi)Polygon per region id, 2-D little-endian WKB

* **Build** (:func:`sceneclip.tools.store_build.build_store`, tooling only): reads any vector file through geopandas, groups features by
  the region field (as text), repairs them with :func:`sceneclip.core.geometry.repair` and dissolves each group
  into one (Multi)Polygon. The store keeps the vector's CRS; the pipeline reprojects per scene with
  densification. Region files are named by a readable slug plus their content hash, so a rebuild never
  overwrites a file an older index points at, and ``index.json`` is written last: a reader never sees an
  index that names missing geometry, even while a rebuild is in progress.
* **Run time** (:class:`BoundaryStore`, :func:`get_store`): reads ``index.json`` only, then fetches a
  region's WKB when that region is asked for. No geopandas, pandas, pyogrio or pyproj is imported here
  (tests check ``sys.modules``), so the function package stays small.

Errors: a missing, unreadable or malformed store is a permanent :class:`~sceneclip.errors.ConfigError`; an
unknown region is :class:`~sceneclip.errors.UnknownRegionError`; throttling, 5xx and connection faults are
transient (:class:`~sceneclip.errors.SourceUnavailableError` when reading, ``UploadError`` when building).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import shapely
from rasterio.crs import CRS
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from sceneclip.core.files import atomic_write
from sceneclip.errors import (
    ConfigError,
    InvalidOptionsError,
    SceneclipError,
    SourceUnavailableError,
    UnknownRegionError,
    classify,
)
from sceneclip.errors import DENIED, MISSING
from sceneclip.core.geometry import Boundary
from sceneclip.core.grid import TargetGrid

FORMAT = "sceneclip-boundaries/1"
INDEX_NAME = "index.json"
REGIONS_DIR = "regions"
BUILD_HINT = "run `sceneclip boundaries build VECTOR --region-field FIELD --out {uri}`"

# The warm-start cache of loaded stores, keyed by normalised URI: a warm Lambda container reuses the index and
# the geometries it already fetched until the store's index.json changes.
_WARM_STORE_CACHE: dict[str, BoundaryStore] = {}



def store_version(region_hashes: Mapping[str, str], crs_wkt: str, region_field: str,
                  grids: Mapping[str, str] | None = None) -> str:
    """sha256 over the format, region field, CRS, every (region id, geometry hash) and every region's grid:
    changes exactly when what a clip would use changes (not when the store is merely rebuilt). A store
    without grids keeps the version it always had."""
    doc: dict[str, Any] = {"format": FORMAT, "crs": crs_wkt, "region_field": region_field,
                           "regions": sorted(region_hashes.items())}
    if grids:
        doc["grids"] = sorted(grids.items())
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


# --- where a store lives: a directory or s3://bucket/prefix ----------------------------------------------------
class StoreLocation:
    """Reads and writes the store's objects by relative name. ``s3_client`` is created lazily for s3:// URIs."""

    def __init__(self, uri: str, *, s3_client: Any = None) -> None:
        if not isinstance(uri, str) or not uri.strip():
            raise ConfigError("boundary store URI is empty; give a directory or s3://bucket/prefix")
        self.uri = uri.rstrip("/") if uri.startswith("s3://") else uri
        self.bucket: str | None = None
        self.prefix = ""
        self._s3 = s3_client
        if uri.startswith("s3://"):
            bucket, _, prefix = uri[len("s3://") :].partition("/")
            if not bucket:
                raise ConfigError(f"boundary store URI {uri!r} names no bucket; expected s3://bucket/prefix")
            self.bucket = bucket
            self.prefix = prefix.strip("/")
            self.cache_key = f"s3://{bucket}/{self.prefix}"
        else:
            path = uri[len("file://") :] if uri.startswith("file://") else uri
            self.directory = os.path.abspath(os.path.expanduser(path))
            self.cache_key = self.directory

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3  # honours AWS_ENDPOINT_URL itself

            self._s3 = boto3.client("s3")
        return self._s3

    def s3_key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def path(self, name: str) -> str:
        return os.path.join(self.directory, *name.split("/"))

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.s3_key(name)}" if self.is_s3 else self.path(name)

    # reading
    def read(self, name: str) -> tuple[bytes, Any]:
        """(content, change marker). Raises FileNotFoundError/PermissionError-like errors untranslated for local
        paths and botocore errors for S3; callers translate them with :func:`_read_error`."""
        if self.is_s3:
            resp = self.s3.get_object(Bucket=self.bucket, Key=self.s3_key(name))
            return resp["Body"].read(), str(resp.get("ETag", ""))
        with open(self.path(name), "rb") as fh:
            st = os.fstat(fh.fileno())
            return fh.read(), (st.st_mtime_ns, st.st_size, st.st_ino)

    def marker(self, name: str) -> Any:
        """A cheap change marker: the S3 ETag (HEAD) or local mtime_ns, size and inode (stat)."""
        if self.is_s3:
            return str(self.s3.head_object(Bucket=self.bucket, Key=self.s3_key(name)).get("ETag", ""))
        st = os.stat(self.path(name))
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    # writing (build only)
    def write(self, name: str, data: bytes, *, content_type: str) -> None:
        if self.is_s3:
            self.s3.put_object(Bucket=self.bucket, Key=self.s3_key(name), Body=data, ContentType=content_type)
            return
        with atomic_write(self.path(name)) as fh:  # a reader sees the old file or the new one
            fh.write(data)


def _read_error(exc: BaseException, location: StoreLocation, name: str, *, missing: str) -> SceneclipError:
    """A failed read of ``name``, typed by :func:`sceneclip.errors.classify`: a fault on the way is
    SourceUnavailableError (retry), access denied is AccessDeniedError, not found a ConfigError whose
    message (``missing``) says how to build the store; anything else it cannot place is transient."""
    what = location.describe(name)
    err = classify(exc, what=f"reading {what}", transient=SourceUnavailableError, permanent=ConfigError,
                   hints={DENIED: f"allow s3:GetObject on the boundary store {location.uri}"})
    if getattr(err, "evidence", None) is not None and err.evidence.kind == MISSING:  # type: ignore[attr-defined]
        return ConfigError(f"{what} not found: {missing}")
    return err


def aws_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # local stores work without boto3
        return (OSError,)
    return (OSError, ClientError, BotoCoreError)


# --- run time -------------------------------------------------------------------------------------------------
class BoundaryStore:
    """A loaded store index; region geometries are fetched on first use and kept for the instance's life.

    Build one with :meth:`load` (always reads) or :func:`get_store` (warm-start cache).
    """

    def __init__(self, location: StoreLocation, index: Mapping[str, Any], *, marker: Any = None) -> None:
        self._location = location
        self._marker = marker
        self.uri = location.uri
        entries = _validate_index(index, location)
        self.version: str = index["version"]
        self.region_field: str = index["region_field"]
        self.source: str = str(index.get("source", ""))
        self.created_at: str = str(index.get("created_at", ""))
        try:
            self.crs: CRS = CRS.from_wkt(index["crs"])
        except Exception as exc:  # CRSError
            raise _bad_store(location, f"its CRS cannot be parsed ({exc})") from exc
        self._entries: dict[str, dict[str, Any]] = entries
        self._ids: list[str] = sorted(entries)
        self._bboxes = np.array([entries[r]["bbox"] for r in self._ids], dtype="float64").reshape(-1, 4)
        self._geometries: dict[str, BaseGeometry] = {}
        self._boundaries: dict[str, Boundary] = {}

    @classmethod
    def load(cls, uri: str, *, s3_client: Any = None) -> BoundaryStore:
        """Read ``index.json`` at ``uri`` (a directory or s3://bucket/prefix); no geometry is fetched yet."""
        return cls._load(StoreLocation(uri, s3_client=s3_client))

    @classmethod
    def _load(cls, location: StoreLocation) -> BoundaryStore:
        try:
            body, marker = location.read(INDEX_NAME)
        except aws_errors() as exc:
            raise _read_error(exc, location, INDEX_NAME, missing=_no_store(location)) from exc
        try:
            index = json.loads(body)
        except ValueError as exc:
            raise _bad_store(location, f"index.json is not valid JSON ({exc})") from exc
        return cls(location, index, marker=marker)

    def __repr__(self) -> str:
        return f"BoundaryStore({self.uri!r}, version={self.version[:12]!r}, regions={len(self._ids)})"

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, region: object) -> bool:
        return str(region) in self._entries

    def regions(self) -> list[str]:
        """Every region id, sorted."""
        return list(self._ids)

    def bbox(self, region: str) -> tuple[float, float, float, float]:
        """The region's (minx, miny, maxx, maxy) in the store CRS, from the index (no fetch)."""
        minx, miny, maxx, maxy = self._entry(region)["bbox"]
        return (float(minx), float(miny), float(maxx), float(maxy))

    def geometry(self, region: str) -> BaseGeometry:
        """The region's (Multi)Polygon in the store CRS; fetched on first use, then cached."""
        region = str(region)
        geom = self._geometries.get(region)
        if geom is None:
            geom = self._fetch(region, self._entry(region))
            self._geometries[region] = geom
        return geom

    def boundary(self, region: str) -> Boundary:
        """The region as a :class:`~sceneclip.core.geometry.Boundary` (source ``"<uri>#<region>"``).

        Raises UnknownRegionError (naming the region, the store and similar ids) when the store has no such region.
        """
        region = str(region)
        bnd = self._boundaries.get(region)
        if bnd is None:
            geom = self.geometry(region)
            bnd = Boundary.from_geometries([geom], self.crs, source=f"{self.uri}#{region}", region=region,
                                           grid=self.grid(region))
            self._boundaries[region] = bnd
        return bnd

    def grid(self, region: str) -> TargetGrid | None:
        """The region's target grid (its own, or the store's default at build time); None = the source's grid."""
        spec = self._entry(region).get("grid")
        if spec is None:
            return None
        try:
            return TargetGrid.from_parts(spec["crs"], spec["res"], what=f"region {region!r} of {self.uri}")
        except (InvalidOptionsError, KeyError, TypeError) as exc:
            raise _bad_store(self._location, f"the grid of region {region!r} is malformed ({exc})") from exc

    def intersecting(self, footprints: Sequence[BaseGeometry]) -> list[str]:
        """Sorted ids of every region whose geometry intersects any of ``footprints`` (store CRS).

        ``footprints`` may hold several polygons, e.g. the ±360° copies of an antimeridian-crossing scene that
        :func:`sceneclip.core.geometry.raster_footprint` returns; a hit on any counts. Index bounding boxes select the
        candidates; only those are fetched and tested exactly. An empty list gives [].
        """
        shapes = [f for f in footprints if f is not None and not f.is_empty]
        if not shapes or not self._ids:
            return []
        candidates = np.zeros(len(self._ids), dtype=bool)
        for shape in shapes:
            fx0, fy0, fx1, fy1 = shape.bounds
            b = self._bboxes
            candidates |= (b[:, 0] <= fx1) & (b[:, 2] >= fx0) & (b[:, 1] <= fy1) & (b[:, 3] >= fy0)
        if not candidates.any():
            return []
        area = shapes[0] if len(shapes) == 1 else shapely.GeometryCollection(shapes)
        shapely.prepare(area)
        hits = [rid for rid, hit in zip(self._ids, candidates, strict=True) if hit]
        return [rid for rid in hits if area.intersects(self.geometry(rid))]

    # internals
    def _entry(self, region: str) -> dict[str, Any]:
        entry = self._entries.get(str(region))
        if entry is None:
            raise UnknownRegionError(self._unknown_message(str(region)))
        return entry

    def _unknown_message(self, region: str) -> str:
        import difflib  # the unknown-region message only

        close = difflib.get_close_matches(region, self._ids, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        sample = ", ".join(map(repr, self._ids[:5])) + (", ..." if len(self._ids) > 5 else "")
        return (
            f"region {region!r} is not in the boundary store {self.uri} "
            f"({len(self._ids)} regions of field {self.region_field!r}, e.g. {sample}){hint}"
        )

    def _fetch(self, region: str, entry: Mapping[str, Any]) -> BaseGeometry:
        key = entry["key"]
        try:
            body, _ = self._location.read(key)
        except aws_errors() as exc:
            raise _read_error(
                exc, self._location, key,
                missing=f"boundary store {self.uri} is incomplete (region {region!r}); rebuild it with "
                f"`sceneclip boundaries build`",
            ) from exc
        if hashlib.sha256(body).hexdigest() != entry["hash"]:
            raise _bad_store(self._location, f"the geometry of region {region!r} ({key}) does not match its hash")
        try:
            geom = shapely.from_wkb(body)
        except Exception as exc:  # shapely.errors.GEOSException
            raise _bad_store(self._location, f"the geometry of region {region!r} cannot be decoded ({exc})") from exc
        if not isinstance(geom, (Polygon, MultiPolygon)) or geom.is_empty:
            raise _bad_store(self._location, f"the geometry of region {region!r} is not a non-empty (Multi)Polygon")
        return geom

    def _adopt_index(self, fresh: BoundaryStore) -> None:
        """Same version re-published (e.g. an unchanged rebuild): keep fetched geometries, take the new keys."""
        self._marker = fresh._marker
        self._entries = fresh._entries
        self.created_at = fresh.created_at


def _no_store(location: StoreLocation) -> str:
    return f"no boundary store at {location.uri}; {BUILD_HINT.format(uri=location.uri)}"


def _bad_store(location: StoreLocation, why: str) -> ConfigError:
    return ConfigError(f"boundary store {location.uri} is not usable: {why}; {BUILD_HINT.format(uri=location.uri)}")


def _validate_index(index: Any, location: StoreLocation) -> dict[str, dict[str, Any]]:
    """Check the index shape; every region entry has a finite bbox, a hash and a key under regions/."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise _bad_store(location, f"index.json has format {found!r}, expected {FORMAT!r}")
    for name in ("version", "crs", "region_field"):
        if not isinstance(index.get(name), str) or not index[name]:
            raise _bad_store(location, f"index.json has no {name!r}")
    regions = index.get("regions")
    if not isinstance(regions, dict):
        raise _bad_store(location, "index.json has no 'regions' mapping")
    for rid, entry in regions.items():
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("hash"), str)
            and isinstance(entry.get("key"), str)
            and entry["key"].startswith(f"{REGIONS_DIR}/")
            and ".." not in entry["key"].split("/")
            and isinstance(entry.get("bbox"), list)
            and len(entry["bbox"]) == 4
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in entry["bbox"])
        )
        if not ok:
            raise _bad_store(location, f"index.json entry for region {rid!r} is malformed")
    return regions


def get_store(uri: str, *, s3_client: Any = None) -> BoundaryStore:
    """The store at ``uri``, reused across warm invocations until its ``index.json`` changes.

    Each call costs one HEAD (S3 ETag) or stat (local mtime, size, inode). When the index changed it is read
    again; if the version is still the same (an unchanged rebuild) the cached instance is kept with its fetched
    geometries, otherwise a new store is returned. Errors as :meth:`BoundaryStore.load`.
    """
    location = StoreLocation(uri, s3_client=s3_client)
    cached = _WARM_STORE_CACHE.get(location.cache_key)
    if cached is not None:
        if s3_client is None:
            location = cached._location  # reuse its (lazily created) client
        try:
            marker = location.marker(INDEX_NAME)
        except aws_errors() as exc:
            err = _read_error(exc, location, INDEX_NAME, missing=_no_store(location))
            if err.permanent:
                _WARM_STORE_CACHE.pop(location.cache_key, None)
            raise err from exc
        if marker == cached._marker:
            return cached
    fresh = BoundaryStore._load(location)
    if cached is not None and fresh.version == cached.version:
        cached._adopt_index(fresh)
        return cached
    _WARM_STORE_CACHE[location.cache_key] = fresh
    return fresh
