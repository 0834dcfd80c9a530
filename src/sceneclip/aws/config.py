"""Function configuration, read once from the environment and passed down as a typed object.

The variable names are part of the contract (template.yaml sets them). Invalid configuration raises
ConfigError naming the variable, at cold start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from dataclasses import dataclass, field

from sceneclip.core.gdalenv import DEFAULT_ALLOWED_DRIVERS, INDIRECTION_DRIVERS
from sceneclip.core.limits import SourceLimits
from sceneclip.core.plan import DEFAULT_MEMORY_LIMIT_MB, MIB, ClipOptions
from sceneclip.core.cog import COG_PROFILES, RESAMPLING_CHOICES
from sceneclip.core.grid import WARP_RESAMPLING
from sceneclip.core.naming import OutputTemplate
from sceneclip.aws.stac_config import StacSettings
from sceneclip.aws.sources import RequesterPays
from sceneclip.errors import ConfigError, InvalidOptionsError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false")


def number_setting(env: Mapping[str, str], name: str, default: Any, cast: Any = int) -> Any:
    """A non-negative number from the environment (``cast`` = int or float); unset or empty → ``default``.
    A wrong value is a ConfigError naming the variable, raised at cold start."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not {'an integer' if cast is int else 'a number'}") from exc
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative (0 means no limit where a limit is meant)")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return number_setting(env, name, default, int)


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma- or space-separated list (empty entries dropped, order kept)."""
    return tuple(dict.fromkeys(v for v in re.split(r"[,\s]+", env.get(name) or "") if v))


def _limits(env: Mapping[str, str]) -> SourceLimits:
    d = SourceLimits()
    return SourceLimits(
        max_side=_int(env, "SCENECLIP_MAX_RASTER_SIDE", d.max_side),
        max_bands=_int(env, "SCENECLIP_MAX_BANDS", d.max_bands),
        max_block_bytes=_int(env, "SCENECLIP_MAX_BLOCK_BYTES", d.max_block_bytes),
        max_window_bytes=_int(env, "SCENECLIP_MAX_WINDOW_BYTES", d.max_window_bytes),
        max_vertices=_int(env, "SCENECLIP_MAX_VERTICES", d.max_vertices),
    )


# Longest Lambda timeout: presigned source URLs need not outlive the invocation that signs them.
DEFAULT_PRESIGN_EXPIRES_S = 900
DEFAULT_MAX_EVENT_RECORDS = 1000


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: it must name {what}")
    return value


def _completion_target(env: Mapping[str, str]) -> str | None:
    """``SCENECLIP_COMPLETION_TARGET``: empty = no events; else a bus or topic ARN, checked at cold start."""
    raw = (env.get("SCENECLIP_COMPLETION_TARGET") or "").strip()
    if not raw:
        return None
    from sceneclip.aws.completion import CompletionTarget

    return CompletionTarget.parse(raw).arn


def _presign_expiry(env: Mapping[str, str]) -> int:
    """Seconds a presigned source URL lives: the function's timeout (the template passes it), at most 7 days."""
    value = _int(env, "SCENECLIP_PRESIGN_EXPIRES_S", DEFAULT_PRESIGN_EXPIRES_S)
    if not 1 <= value <= 7 * 24 * 3600:
        raise ConfigError(f"SCENECLIP_PRESIGN_EXPIRES_S={value} must be between 1 and 604800 seconds")
    return value


def _output_template(env: Mapping[str, str]) -> OutputTemplate:
    """SCENECLIP_OUTPUT_KEY, which must start with {prefix}: the function may write only under the prefix,
    and only keys under it are recognised as outputs (never clipped again)."""
    template = OutputTemplate.parse(env.get("SCENECLIP_OUTPUT_KEY"))
    if not template.text.startswith("{prefix}"):
        raise ConfigError(f"SCENECLIP_OUTPUT_KEY={template.text!r} must start with {{prefix}} "
                          "(outputs stay under SCENECLIP_OUTPUT_PREFIX)")
    return template


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know, validated."""

    output_bucket: str
    boundaries: str
    records_table: str
    output_prefix: str = "clipped/"
    region_pattern: re.Pattern[str] | None = None
    idempotency_table: str | None = None
    all_touched: bool = False
    invert: bool = False
    pad: bool = False
    nodata: float | None = None
    cog_profile: str = "deflate"
    overview_resampling: str | None = None
    resampling: str = "nearest"
    dst_crs: str | None = None
    resolution: tuple[float, float] | None = None
    target_aligned: bool = False
    src_nodata: float | None = None
    write_stac: bool = True
    tmpdir: str = "/tmp"
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    idempotency_ttl_s: int = 7 * 24 * 3600
    completion_target: str | None = None  # EventBridge bus / SNS topic ARN for completion events; None = off
    input_buckets: tuple[str, ...] = ()  # empty: any bucket (the template always sets it)
    allowed_drivers: tuple[str, ...] = DEFAULT_ALLOWED_DRIVERS
    limits: SourceLimits = field(default_factory=SourceLimits)
    chunk_bytes: int = 64 * MIB
    max_event_records: int = DEFAULT_MAX_EVENT_RECORDS
    presign_expires_s: int = DEFAULT_PRESIGN_EXPIRES_S
    output_template: OutputTemplate = OutputTemplate.parse(None)
    stac_collection: str | None = None
    stac: StacSettings = field(default_factory=StacSettings)  # archive STAC Items (SCENECLIP_STAC_*)
    # Source buckets whose reads this account pays for (SCENECLIP_REQUESTER_PAYS); reads only, so not hashed.
    requester_pays: RequesterPays = field(default_factory=RequesterPays)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        bucket = _required(env, "SCENECLIP_OUTPUT_BUCKET", "the bucket clipped COGs are written to")
        boundaries = _required(env, "SCENECLIP_BOUNDARIES", "the boundary store URI (s3://bucket/prefix or a path)")
        if not re.match(r"^(s3://[^/]+|/|\.|[A-Za-z0-9_])", boundaries):
            raise ConfigError(f"SCENECLIP_BOUNDARIES={boundaries!r} is neither s3://bucket/prefix nor a path")
        table = _required(env, "SCENECLIP_RECORDS_TABLE", "the DynamoDB table verification records go to")
        prefix = env.get("SCENECLIP_OUTPUT_PREFIX", "clipped/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if prefix.startswith("/"):
            raise ConfigError(f"SCENECLIP_OUTPUT_PREFIX={prefix!r} must not start with '/'")
        try:
            memory = int(env.get("SCENECLIP_MEMORY_LIMIT_MB", str(DEFAULT_MEMORY_LIMIT_MB)))
        except ValueError as exc:
            raise ConfigError("SCENECLIP_MEMORY_LIMIT_MB must be an integer number of MB") from exc
        settings = cls(
            output_bucket=bucket,
            boundaries=boundaries,
            records_table=table,
            output_prefix=prefix,
            region_pattern=_region_pattern(env),
            idempotency_table=(env.get("SCENECLIP_IDEMPOTENCY_TABLE") or "").strip() or None,
            all_touched=_bool(env, "SCENECLIP_ALL_TOUCHED"),
            invert=_bool(env, "SCENECLIP_INVERT"),
            pad=_bool(env, "SCENECLIP_PAD"),
            **_overview_options(env),
            **_grid_options(env),
            write_stac=_bool(env, "SCENECLIP_WRITE_STAC", True),
            tmpdir=env.get("SCENECLIP_TMPDIR") or env.get("TMPDIR") or "/tmp",
            memory_limit_mb=memory,
            completion_target=_completion_target(env),
            input_buckets=_names(env, "SCENECLIP_INPUT_BUCKETS"),
            allowed_drivers=_drivers(env),
            limits=_limits(env),
            chunk_bytes=_int(env, "SCENECLIP_MAX_CHUNK_BYTES", 64 * MIB) or 64 * MIB,
            max_event_records=_int(env, "SCENECLIP_MAX_EVENT_RECORDS", DEFAULT_MAX_EVENT_RECORDS),
            presign_expires_s=_presign_expiry(env),
            output_template=_output_template(env),
            stac_collection=(env.get("SCENECLIP_STAC_COLLECTION") or "").strip() or None,
            stac=StacSettings.from_env(env),
            requester_pays=RequesterPays.parse(env.get("SCENECLIP_REQUESTER_PAYS")),
        )
        try:  # options that cannot be combined fail here, at cold start, not on the first scene
            settings.clip_options()
        except InvalidOptionsError as exc:
            raise ConfigError(f"SCENECLIP_* clip options: {exc}") from exc
        return settings

    def clip_options(self) -> ClipOptions:
        return ClipOptions(
            all_touched=self.all_touched,
            invert=self.invert,
            pad=self.pad,
            nodata=self.nodata,
            profile=self.cog_profile,
            overview_resampling=self.overview_resampling,
            resampling=self.resampling,
            dst_crs=self.dst_crs,
            resolution=self.resolution,
            target_aligned=self.target_aligned,
            src_nodata=self.src_nodata,
            tmpdir=self.tmpdir,
            memory_limit=self.memory_limit_mb * MIB,
            allowed_drivers=self.allowed_drivers,
            limits=self.limits,
            chunk_bytes=self.chunk_bytes,
        )

    def input_bucket_allowed(self, bucket: str) -> bool:
        return not self.input_buckets or bucket in self.input_buckets

    def is_output(self, bucket: str, key: str) -> bool:
        """Whether ``s3://bucket/key`` lies under our output location (it must never be clipped again: it would loop)."""
        return bucket == self.output_bucket and key.startswith(self.output_prefix)

    @property
    def config_hash(self) -> str:
        """Identity of everything that changes the output bytes or location (idempotency key, backfill skip rule)."""
        # A stacked Item makes one multi-band COG instead of one per asset: another output. Added only when on,
        # so the hashes (idempotency keys, backfill skips) of every per-asset configuration stay as they were.
        stack = {"stac_stack": True} if self.stac.stack else {}
        return self.clip_options().fingerprint(output=f"s3://{self.output_bucket}/{self.output_prefix}",
                                               output_key=self.output_template.text, collection=self.stac_collection,
                                               **stack)


def _region_pattern(env: Mapping[str, str]) -> re.Pattern[str] | None:
    """SCENECLIP_REGION_PATTERN: a regex with a named group ``region``, or None (spatial lookup)."""
    raw_pattern = (env.get("SCENECLIP_REGION_PATTERN") or "").strip()
    return named_group_pattern(raw_pattern, "region", "SCENECLIP_REGION_PATTERN=") if raw_pattern else None


def named_group_pattern(text: str, group: str, what: str, example: str = "") -> re.Pattern[str]:
    """``text`` compiled as a regex that has the named group ``group``; a ConfigError naming ``what`` (the
    setting, e.g. ``SCENECLIP_REGION_PATTERN=`` or ``--group-by ``) otherwise."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{what}{text!r} is not a valid regex: {exc}") from exc
    if group not in pattern.groupindex:
        raise ConfigError(f"{what}{text!r} needs a named group (?P<{group}>...)" + (f", e.g. {example}" if example else ""))
    return pattern


def _overview_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Output nodata, COG profile and overview resampling, each validated and named when wrong."""
    nodata = None
    if env.get("SCENECLIP_NODATA", "").strip():
        try:
            nodata = float(env["SCENECLIP_NODATA"])
        except ValueError as exc:
            raise ConfigError(f"SCENECLIP_NODATA={env['SCENECLIP_NODATA']!r} is not a number") from exc
    profile = env.get("SCENECLIP_COG_PROFILE", "deflate").lower()
    if profile not in COG_PROFILES:
        raise ConfigError(f"SCENECLIP_COG_PROFILE={profile!r}: choose one of {sorted(COG_PROFILES)}")
    resampling = (env.get("SCENECLIP_OVERVIEW_RESAMPLING") or "").lower() or None
    if resampling and resampling not in RESAMPLING_CHOICES:
        raise ConfigError(f"SCENECLIP_OVERVIEW_RESAMPLING={resampling!r}: choose one of {RESAMPLING_CHOICES}")
    return {"nodata": nodata, "cog_profile": profile, "overview_resampling": resampling}


def _grid_options(env: Mapping[str, str]) -> dict[str, Any]:
    """SCENECLIP_DST_CRS, SCENECLIP_RESOLUTION (one value, or x,y), SCENECLIP_TAP, SCENECLIP_RESAMPLING and
    SCENECLIP_SRC_NODATA (nodata for sources that declare none)."""
    resampling = (env.get("SCENECLIP_RESAMPLING") or "nearest").strip().lower()
    if resampling not in WARP_RESAMPLING:
        raise ConfigError(f"SCENECLIP_RESAMPLING={resampling!r}: choose one of {', '.join(WARP_RESAMPLING)}")
    raw = (env.get("SCENECLIP_RESOLUTION") or "").strip()
    resolution = None
    if raw:
        try:
            values = [float(v) for v in raw.split(",")]
        except ValueError as exc:
            raise ConfigError(f"SCENECLIP_RESOLUTION={raw!r} is not one number or two (x,y)") from exc
        if len(values) not in (1, 2):
            raise ConfigError(f"SCENECLIP_RESOLUTION={raw!r} is not one number or two (x,y)")
        resolution = (values[0], values[-1])
    src_nodata = None
    if (env.get("SCENECLIP_SRC_NODATA") or "").strip():
        try:
            src_nodata = float(env["SCENECLIP_SRC_NODATA"])
        except ValueError as exc:
            raise ConfigError(f"SCENECLIP_SRC_NODATA={env['SCENECLIP_SRC_NODATA']!r} is not a number") from exc
    return {"resampling": resampling, "dst_crs": (env.get("SCENECLIP_DST_CRS") or "").strip() or None,
            "resolution": resolution, "target_aligned": _bool(env, "SCENECLIP_TAP"), "src_nodata": src_nodata}


def _drivers(env: Mapping[str, str]) -> tuple[str, ...]:
    """SCENECLIP_ALLOWED_DRIVERS; indirection drivers (VRT, WMS, GTI…) can never be allowed."""
    drivers = _names(env, "SCENECLIP_ALLOWED_DRIVERS") or DEFAULT_ALLOWED_DRIVERS
    indirect = sorted(set(d.upper() for d in drivers) & {d.upper() for d in INDIRECTION_DRIVERS})
    if indirect:
        raise ConfigError(f"SCENECLIP_ALLOWED_DRIVERS names {indirect}: drivers that read other files or URLs "
                          "are never allowed for sources")
    return drivers
