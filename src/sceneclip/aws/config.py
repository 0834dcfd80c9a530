"""Function configuration, read once from the environment and passed down as a typed object.

The variable names are part of the contract (template.yaml sets them). Invalid configuration raises
ConfigError naming the variable, at cold start.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sceneclip.core.plan import DEFAULT_MEMORY_LIMIT_MB, MIB, ClipOptions
from sceneclip.core.cog import COG_PROFILES, RESAMPLING_CHOICES
from sceneclip.core.naming import OutputTemplate
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


def _required(env: Mapping[str, str], name: str, what: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: it must name {what}")
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
    resampling: str | None = None
    write_stac: bool = True
    tmpdir: str = "/tmp"
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB
    idempotency_ttl_s: int = 7 * 24 * 3600
    output_template: OutputTemplate = OutputTemplate.parse(None)
    stac_collection: str | None = None

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
        pattern = None
        raw_pattern = (env.get("SCENECLIP_REGION_PATTERN") or "").strip()
        if raw_pattern:
            try:
                pattern = re.compile(raw_pattern)
            except re.error as exc:
                raise ConfigError(f"SCENECLIP_REGION_PATTERN={raw_pattern!r} is not a valid regex: {exc}") from exc
            if "region" not in pattern.groupindex:
                raise ConfigError(f"SCENECLIP_REGION_PATTERN={raw_pattern!r} needs a named group (?P<region>...)")
        nodata = None
        if env.get("SCENECLIP_NODATA", "").strip():
            try:
                nodata = float(env["SCENECLIP_NODATA"])
            except ValueError as exc:
                raise ConfigError(f"SCENECLIP_NODATA={env['SCENECLIP_NODATA']!r} is not a number") from exc
        profile = env.get("SCENECLIP_COG_PROFILE", "deflate").lower()
        if profile not in COG_PROFILES:
            raise ConfigError(f"SCENECLIP_COG_PROFILE={profile!r}: choose one of {sorted(COG_PROFILES)}")
        resampling = (env.get("SCENECLIP_RESAMPLING") or "").lower() or None
        if resampling and resampling not in RESAMPLING_CHOICES:
            raise ConfigError(f"SCENECLIP_RESAMPLING={resampling!r}: choose one of {RESAMPLING_CHOICES}")
        try:
            memory = int(env.get("SCENECLIP_MEMORY_LIMIT_MB", str(DEFAULT_MEMORY_LIMIT_MB)))
        except ValueError as exc:
            raise ConfigError("SCENECLIP_MEMORY_LIMIT_MB must be an integer number of MB") from exc
        settings = cls(
            output_bucket=bucket,
            boundaries=boundaries,
            records_table=table,
            output_prefix=prefix,
            region_pattern=pattern,
            idempotency_table=(env.get("SCENECLIP_IDEMPOTENCY_TABLE") or "").strip() or None,
            all_touched=_bool(env, "SCENECLIP_ALL_TOUCHED"),
            invert=_bool(env, "SCENECLIP_INVERT"),
            pad=_bool(env, "SCENECLIP_PAD"),
            nodata=nodata,
            cog_profile=profile,
            resampling=resampling,
            write_stac=_bool(env, "SCENECLIP_WRITE_STAC", True),
            tmpdir=env.get("SCENECLIP_TMPDIR") or env.get("TMPDIR") or "/tmp",
            memory_limit_mb=memory,
            output_template=_output_template(env),
            stac_collection=(env.get("SCENECLIP_STAC_COLLECTION") or "").strip() or None,
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
            resampling=self.resampling,
            tmpdir=self.tmpdir,
            memory_limit=self.memory_limit_mb * MIB,
        )

    def is_output(self, bucket: str, key: str) -> bool:
        """Whether ``s3://bucket/key`` lies under our output location (it must never be clipped again: it would loop)."""
        return bucket == self.output_bucket and key.startswith(self.output_prefix)

    @property
    def config_hash(self) -> str:
        """Identity of everything that changes the output bytes or location (idempotency key, backfill skip rule)."""
        return self.clip_options().fingerprint(output=f"s3://{self.output_bucket}/{self.output_prefix}",
                                               output_key=self.output_template.text, collection=self.stac_collection)
