"""Reading boundaries from vector files (tooling side: geopandas, imported lazily).

The Lambda path never calls this module's readers; it reads the compiled boundary store instead (see
``sceneclip.aws.store``), so geopandas/pandas/pyogrio stay out of the function package.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from sceneclip.errors import BoundaryError, InvalidOptionsError, MissingCRSError, UnknownRegionError
from sceneclip.core.geometry import Boundary, dissolve
from sceneclip.core.grid import GRID_CRS_FIELD, GRID_RES_FIELD, grid_from_fields


def read_vector(path: str, layer: str | None = None) -> Any:
    """Any vector file geopandas reads (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet)."""
    import geopandas as gpd

    if not (path.startswith(("/vsi", "s3://", "http://", "https://")) or os.path.exists(path)):
        raise BoundaryError(f"boundary file {path!r} does not exist")
    try:
        if path.lower().endswith((".parquet", ".geoparquet")):
            return gpd.read_parquet(path)
        return gpd.read_file(path, layer=layer) if layer else gpd.read_file(path)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        raise BoundaryError(f"cannot read boundary file {path!r}" + (f" layer {layer!r}" if layer else "") + f": {exc}") from exc


def select_region(frame: Any, region_field: str | None, region: str | None, *, source: str) -> Any:
    """Rows whose ``region_field`` equals ``region`` (compared as text, so '7' matches 7)."""
    if (region_field is None) != (region is None):
        raise BoundaryError("--region-field and --region go together: give both, or neither to use every feature")
    if region_field is None:
        return frame
    if region_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        raise BoundaryError(f"boundary {source!r} has no field {region_field!r}; fields are: {fields}")
    selected = frame[frame[region_field].astype(str) == str(region)]
    if selected.empty:
        sample = ", ".join(sorted(map(str, frame[region_field].dropna().unique()))[:10])
        raise UnknownRegionError(
            f"region {region!r} not found in field {region_field!r} of {source!r} (values include: {sample})"
        )
    return selected


def load_boundary(
    path: str,
    *,
    layer: str | None = None,
    region_field: str | None = None,
    region: str | None = None,
) -> Boundary:
    """Read a vector file, select a region, and return a :class:`Boundary` (geometries + CRS + hash).

    Parameters
    ----------
    path : str
        Any vector file geopandas reads (local, ``/vsi…`` or ``s3://``).
    layer : str, optional
        Layer of a multi-layer file (GeoPackage).
    region_field, region : str, optional
        Keep only features whose ``region_field`` equals ``region`` (as text); give both or neither.
    """
    if layer is None and region_field is None and region is None:
        plain = plain_geojson_boundary(path)
        if plain is not None:
            return plain
    return boundary_from_frame(read_vector(path, layer), path, region_field=region_field, region=region)


PLAIN_GEOJSON_MAX_BYTES = 64 * 1024 * 1024
_CRS84_NAMES = frozenset({"urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "OGC:CRS84"})
_EPSG_NAME = re.compile(r"^(?:EPSG:|urn:ogc:def:crs:EPSG::|urn:ogc:def:crs:EPSG:[0-9.]*:)(\d+)$")


def plain_geojson_boundary(path: str) -> Boundary | None:
    """The whole-file :class:`Boundary` of a plain local GeoJSON FeatureCollection, read without geopandas.

    Importing geopandas (pandas, pyogrio) takes about 0.35 s, a twentieth of a 250 MiB clip, to read what is
    a few kilobytes of JSON for the usual one-boundary file. Only the plain case is read here: a local
    ``.geojson``/``.json`` FeatureCollection whose CRS is absent (RFC 7946: EPSG:4326, as GDAL reads it) or
    an EPSG name, every geometry a GeoJSON geometry, no ``grid_crs``/``grid_res`` fields. Anything else
    returns None and goes through geopandas, whose reading is the reference: the result is the same Boundary
    (geometries, CRS, content hash), which the tests check on the real boundary files.
    """
    from shapely.geometry import shape

    if not path.lower().endswith((".geojson", ".json")) or not os.path.isfile(path):
        return None
    if os.path.getsize(path) > PLAIN_GEOJSON_MAX_BYTES:
        return None
    try:
        with open(path, "rb") as fh:
            doc = json.load(fh)
        crs = _plain_crs(doc)
        features = doc.get("features")
        if crs is None or doc.get("type") != "FeatureCollection" or not isinstance(features, list):
            return None
        geoms = []
        for feature in features:
            props = feature.get("properties") or {}
            if feature.get("type") != "Feature" or not isinstance(props, dict) or \
                    GRID_CRS_FIELD in props or GRID_RES_FIELD in props:
                return None
            geom = feature.get("geometry")
            geoms.append(None if geom is None else shape(geom))
    except (ValueError, TypeError, AttributeError, KeyError):  # not plain JSON/GeoJSON: geopandas says what is wrong
        return None
    import pyproj  # the CRS as geopandas gives it (its WKT is what the content hash covers)

    merged = dissolve([g for g in geoms if g is not None and not g.is_empty])
    return Boundary.from_geometries([] if merged is None else [merged], pyproj.CRS.from_user_input(crs).to_wkt(),
                                    source=path, region=None,
                                    grid=grid_from_fields([(None, None)] * len(geoms), None, f"boundary {path!r}"))


def _plain_crs(doc: Any) -> str | None:
    """``EPSG:n`` for a FeatureCollection without a ``crs`` member or with an EPSG-named one; None otherwise."""
    if not isinstance(doc, dict):
        return None
    member = doc.get("crs")
    if member is None:
        return "EPSG:4326"
    name = member.get("properties", {}).get("name") if isinstance(member, dict) and member.get("type") == "name" else None
    if name in _CRS84_NAMES:  # GDAL reads OGC:CRS84 GeoJSON as EPSG:4326 with longitude first, as geopandas reports
        return "EPSG:4326"
    match = _EPSG_NAME.match(name) if isinstance(name, str) else None
    return f"EPSG:{match.group(1)}" if match else None


def boundary_from_frame(frame: Any, path: str, *, region_field: str | None = None, region: str | None = None) -> Boundary:
    """The :class:`Boundary` of one region of an already-read GeoDataFrame (batch reads each file once).

    One repaired, dissolved geometry — exactly what the boundary store keeps per region — so a region's
    content hash is the same from the file (CLI, batch) and from the store (Lambda).
    """
    if frame.crs is None:
        raise MissingCRSError(
            f"boundary {path!r} has no CRS; add one (e.g. a .prj file, or `ogr2ogr -a_srs EPSG:4326`)"
        )
    frame = select_region(frame, region_field, region, source=path)
    merged = dissolve([g for g in frame.geometry if g is not None and not g.is_empty])
    try:  # the features' grid_crs/grid_res fields, as a boundary store would hold them
        grid = grid_from_fields(feature_grid_fields(frame), None, f"boundary {path!r}" + (f" region {region!r}" if region else ""))
    except InvalidOptionsError as exc:
        raise BoundaryError(str(exc)) from exc
    return Boundary.from_geometries([] if merged is None else [merged], frame.crs.to_wkt(), source=path, region=region,
                                    grid=grid)


def feature_grid_fields(frame: Any) -> list[tuple[Any, Any]]:
    """Each feature's (grid_crs, grid_res) values; (None, None) when the file has no such fields."""
    def column(name: str) -> list[Any]:
        return frame[name].tolist() if name in frame.columns else [None] * len(frame)

    return list(zip(column(GRID_CRS_FIELD), column(GRID_RES_FIELD), strict=True))
