"""Making batch jobs: a manifest (CSV / JSON lines), or every scene × every region it overlaps."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

from sceneclip.core.naming import NameFields, OutputTemplate, key_slug, slug
from sceneclip.errors import BoundaryError, ConfigError, MissingCRSError, SceneclipError

log = logging.getLogger("sceneclip.batch")

MANIFEST_FIELDS = ("source", "boundary", "region", "output", "region_field", "layer")


@dataclass(frozen=True)
class BatchJob:
    """One clip: ``source`` scene, ``boundary`` vector file (+ ``layer``), ``region`` of ``region_field``, ``output``."""

    source: str
    boundary: str
    region: str | None
    output: str
    region_field: str | None = None
    layer: str | None = None
    sources: tuple[str, ...] = ()  # a mosaic's further sources, after ``source`` (the first valid pixel wins)

    @property
    def all_sources(self) -> tuple[str, ...]:
        """Every source of the job, in priority order."""
        return (self.source, *self.sources)

    @property
    def label(self) -> str:
        """The job's sources as one text (``a + b`` for a mosaic): resume keys and messages."""
        return " + ".join(self.all_sources)


# --- making jobs ---------------------------------------------------------------------------------------------
def _is_uri(path: str) -> bool:
    return path.startswith(("/vsi", "s3://", "http://", "https://", "gs://"))


def _resolve(path: str, base: Path) -> str:
    return path if _is_uri(path) or os.path.isabs(path) else str(base / path)


def _optional(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def jobs_from_manifest(path: str, *, region_field: str | None = None, layer: str | None = None) -> list[BatchJob]:
    """Jobs from a CSV (header ``source,boundary,region,output[,region_field,layer]``) or JSON-lines manifest.

    A ``.jsonl``/``.ndjson``/``.json`` file, or one whose first character is ``{``, is read as JSON lines (one
    object per line with the same keys; blank and ``#`` lines ignored). Relative paths are relative to the
    manifest's folder. ``region_field``/``layer`` are defaults for rows that do not name their own.
    Raises ConfigError naming the line for a missing column or value.
    """
    base = Path(path).resolve().parent
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path!r}: {exc}") from exc
    is_jsonl = path.lower().endswith((".jsonl", ".ndjson", ".json")) or text.lstrip().startswith("{")
    rows = list(_jsonl_rows(text, path)) if is_jsonl else list(_csv_rows(text, path))
    jobs = []
    for lineno, row in rows:
        missing = [k for k in ("source", "boundary", "output") if not _optional(row.get(k))]
        if missing:
            raise ConfigError(f"manifest {path!r} line {lineno}: missing {', '.join(missing)}")
        unknown = set(row) - set(MANIFEST_FIELDS)
        if unknown:
            raise ConfigError(f"manifest {path!r} line {lineno}: unknown field(s) {sorted(unknown)}; "
                              f"fields are {', '.join(MANIFEST_FIELDS)}")
        jobs.append(BatchJob(
            source=_resolve(str(row["source"]).strip(), base),
            boundary=_resolve(str(row["boundary"]).strip(), base),
            region=_optional(row.get("region")),
            output=_resolve(str(row["output"]).strip(), base),
            region_field=_optional(row.get("region_field")) or region_field,
            layer=_optional(row.get("layer")) or layer,
        ))
    if not jobs:
        raise ConfigError(f"manifest {path!r} lists no job")
    return jobs


def _csv_rows(text: str, path: str) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    if not reader.fieldnames or "source" not in reader.fieldnames:
        raise ConfigError(f"manifest {path!r}: the first line must be a header: {','.join(MANIFEST_FIELDS)}")
    for i, row in enumerate(reader, start=2):
        if any(_optional(v) for v in row.values()):
            yield i, {k: v for k, v in row.items() if k is not None}


def _jsonl_rows(text: str, path: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"manifest {path!r} line {i}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"manifest {path!r} line {i}: expected an object")
        yield i, row


def safe_name(value: Any) -> str:
    """One file-name component for a region name, by the one slug rule of :mod:`sceneclip.core.naming`
    ('Côte d'Ivoire' → 'C_te_d_Ivoire'; never empty, never '..')."""
    return slug(str(value), keep_slash=False).strip("._") or "region"


def _batch_name(template: OutputTemplate | None, path: str, region: str | None, dir_name: str) -> str:
    """The output path under OUT for one job: ``--output-key`` rendered, else ``{region dir}/{file key slug}``."""
    name = os.path.basename(path)
    if template is None:
        return os.path.join(dir_name, key_slug(name))
    bucket, key = (path[len("s3://"):].split("/", 1) + [""])[:2] if path.startswith("s3://") else (None, name)
    try:
        date = time.strftime("%Y-%m-%d", time.gmtime(os.path.getmtime(path))) if bucket is None else None
    except OSError:
        date = None
    return template.render(NameFields(prefix="", region=region if region is not None else dir_name,
                                      bucket=bucket, key=key, date=date))


def jobs_from_sources(
    sources: str | Iterable[str],
    boundary: str,
    region_field: str | None,
    out_dir: str,
    layer: str | None = None,
    output_key: str | None = None,
    group_by: str | None = None,
) -> list[BatchJob]:
    """Every scene matching ``sources`` (a glob, or a list of paths) × every region it overlaps.

    The vector file is read once. Each scene's footprint is carried into the vector's CRS
    (:func:`sceneclip.core.geometry.raster_footprint`) and intersected with the features; features sharing a
    ``region_field`` value are one region. Outputs: ``{out_dir}/{region}/{file name}`` (region made file-name
    safe, disambiguated by a short hash when two names collide; the file name as an injective slug, extension
    kept: :func:`sceneclip.core.naming.key_slug`), or ``{out_dir}/{output_key rendered}`` with a template
    (``--output-key``; ``{key}`` is the file name, ``{bucket}`` set for s3:// sources, ``{date}`` the file's
    mtime). Without ``region_field`` the whole layer is one region named after the file. Scenes that cannot
    be opened are reported on stderr and skipped. With ``group_by`` (a regex with a named group ``group``
    searched in each file name, e.g. a date) the scenes of one group make one mosaic per region they
    overlap, in file-name order (the first valid pixel wins), written to ``{out_dir}/{region}/{group}.tif``;
    scenes whose name does not match are reported and skipped.
    """
    import rasterio
    import shapely

    from sceneclip.core.source import open_source
    from sceneclip.tools.vectors import read_vector
    from sceneclip.core.geometry import raster_footprint

    paths = sorted(glob(sources)) if isinstance(sources, str) else list(sources)
    if not paths:
        raise ConfigError(f"no scene matches {sources!r}")
    frame = read_vector(boundary, layer)
    if frame.crs is None:
        raise MissingCRSError(f"boundary {boundary!r} has no CRS; add one (e.g. `ogr2ogr -a_srs EPSG:4326`)")
    if region_field is not None and region_field not in frame.columns:
        fields = ", ".join(c for c in frame.columns if c != frame.geometry.name)
        raise BoundaryError(f"boundary {boundary!r} has no field {region_field!r}; fields are: {fields}")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    from rasterio.crs import CRS

    vector_crs = CRS.from_wkt(frame.crs.to_wkt())
    names = _region_dir_names(frame, region_field, boundary)
    template = OutputTemplate.parse(output_key, source="--output-key") if output_key else None
    grouping = _group_pattern(group_by)
    jobs: list[BatchJob] = []
    mosaics: dict[tuple[str, str | None], list[str]] = {}
    for path in paths:
        group = None
        if grouping is not None:
            match = grouping.search(os.path.basename(path))
            if match is None or not match.group("group"):
                log.warning("skipping %s: its name does not match --group-by %r", path, group_by)
                continue
            group = match.group("group")
        try:  # the clip's driver allow-list: a VRT/WMS/GTI named .tif is skipped, not opened
            with open_source(path) as ds:
                crs, bounds = ds.crs, tuple(ds.bounds)
        except (rasterio.errors.RasterioError, SceneclipError) as exc:
            log.warning("skipping %s: cannot open (%s)", path, exc)
            continue
        if crs is None:
            log.warning("skipping %s: no CRS", path)
            continue
        footprints = raster_footprint(bounds, crs, vector_crs)
        if not footprints:
            continue
        area = shapely.union_all(footprints)
        hits = frame.iloc[frame.sindex.query(area, predicate="intersects")]
        regions = sorted({str(v) for v in hits[region_field]}) if region_field else ([None] if len(hits) else [])
        for region in regions:
            if group is not None:
                mosaics.setdefault((group, region), []).append(path)
                continue
            out = os.path.join(out_dir, _batch_name(template, path, region, names[region]))
            jobs.append(BatchJob(path, boundary, region, out, region_field, layer))
    for (group, region), members in sorted(mosaics.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        out = os.path.join(out_dir, names[region], f"{safe_name(group)}.tif")
        jobs.append(BatchJob(members[0], boundary, region, out, region_field, layer, sources=tuple(members[1:])))
    return jobs


def _group_pattern(group_by: str | None) -> Any:
    """``--group-by``: a regex with a named group ``group``; a ConfigError saying what is wrong otherwise."""
    if not group_by:
        return None
    from sceneclip.aws.backfill_mosaic import group_pattern  # one rule for batch and backfill

    return group_pattern(group_by)


def _region_dir_names(frame: Any, region_field: str | None, boundary: str) -> dict[str | None, str]:
    if region_field is None:
        return {None: safe_name(Path(boundary).stem)}
    names: dict[str | None, str] = {}
    taken: dict[str, str] = {}
    for value in sorted({str(v) for v in frame[region_field].dropna()}):
        name = safe_name(value)
        if name in taken and taken[name] != value:
            name = f"{name}-{hashlib.sha1(value.encode()).hexdigest()[:6]}"
        taken[name] = value
        names[value] = name
    return names
