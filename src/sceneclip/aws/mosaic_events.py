"""Mosaic job messages: several source objects, one region, one group → one clip.

The shape (an SQS body or a direct invoke), as ``sceneclip backfill --group-by`` writes it::

    {"sources": [{"bucket": "b", "key": "k", "etag": "…"?, "version_id": "…"?}, …],
     "region": "R", "group": "G", "force": false?}

Sources are in priority order (the first valid pixel wins). Parsed here, at the trust boundary, strictly: a
message that has ``sources`` is a mosaic message, and any field missing, of the wrong type or unknown makes
it a :class:`RefusedRef` — recorded by the pipeline as a permanent :class:`~sceneclip.errors.InvalidMosaicError`
failure, nothing read — rather than being dropped unseen like an unparseable event. Each source then passes
the same admission rules as a single-object event (input buckets, never an output, safe keys, its ETag).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sceneclip.errors import InvalidMosaicError

MOSAIC_SCHEME: Final = "mosaic://"
MAX_SOURCES: Final = 50  # one clip opens every source's header: a bound on what one message may ask for
MAX_NAME: Final = 256  # region length
# A group names the output object (``{region}/{group}.tif``): a plain file name, so two groups never share one.
GROUP_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SOURCE_FIELDS: Final = frozenset({"bucket", "key", "etag", "version_id"})
_FIELDS: Final = frozenset({"sources", "region", "group", "force"})


def mosaic_scene(group: str) -> str:
    """The records-table identity of a group's mosaic (``mosaic://G``; the region is the row's other key)."""
    return f"{MOSAIC_SCHEME}{group}"


@dataclass(frozen=True)
class MosaicSource:
    """One source object of a mosaic message, as the message names it (ETag and version are optional pins)."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def to_message(self) -> dict[str, str]:
        out = {"bucket": self.bucket, "key": self.key}
        out |= {"etag": self.etag} if self.etag else {}
        return out | ({"version_id": self.version_id} if self.version_id else {})


@dataclass(frozen=True)
class MosaicRef:
    """A mosaic to make: ``sources`` (priority order) clipped to ``region``, written as the group's output."""

    sources: tuple[MosaicSource, ...]
    region: str
    group: str
    force: bool = False

    @property
    def uri(self) -> str:
        """The mosaic's identity in records and logs: ``mosaic://G``."""
        return mosaic_scene(self.group)

    def to_message(self) -> dict[str, Any]:
        """The message form; :func:`mosaic_ref` of it gives back an equal ref."""
        message: dict[str, Any] = {"sources": [s.to_message() for s in self.sources], "region": self.region,
                                   "group": self.group}
        return message | ({"force": True} if self.force else {})


@dataclass(frozen=True)
class RefusedRef:
    """A message recognised (a mosaic job) but refused at the door: the pipeline records ``error`` under ``uri``
    and region ``-``."""

    uri: str
    error: InvalidMosaicError


def mosaic_ref(payload: Mapping[str, Any]) -> MosaicRef | RefusedRef | None:
    """The mosaic job of ``payload``; None when it is no mosaic message (it has no ``sources``)."""
    if "sources" not in payload:
        return None
    group = payload.get("group")
    uri = mosaic_scene(group) if valid_group(group) else f"{MOSAIC_SCHEME}-"
    try:
        return _parse(payload)
    except InvalidMosaicError as exc:
        return RefusedRef(uri, exc)


def _parse(payload: Mapping[str, Any]) -> MosaicRef:
    unknown = sorted(map(str, payload.keys() - _FIELDS))
    if unknown:
        raise InvalidMosaicError(f"mosaic message has unknown field(s) {', '.join(unknown)}; "
                                 f"expected {', '.join(sorted(_FIELDS))}")
    if not _name(payload.get("region")):
        raise InvalidMosaicError(f"mosaic message needs 'region': a non-empty string of at most {MAX_NAME} "
                                 f"characters (got {_short(payload.get('region'))})")
    if not valid_group(payload.get("group")):
        raise InvalidMosaicError("mosaic message needs 'group': 1-128 letters, digits, '.', '_' or '-', starting "
                                 f"with a letter or digit (it names the output file; got {_short(payload.get('group'))})")
    force = payload.get("force", False)
    if not isinstance(force, bool):
        raise InvalidMosaicError(f"mosaic message 'force' must be true or false, got {_short(force)}")
    raw = payload["sources"]
    if not isinstance(raw, list) or not raw:
        raise InvalidMosaicError(f"mosaic message 'sources' must be a non-empty list, got {_short(raw)}")
    if len(raw) > MAX_SOURCES:
        raise InvalidMosaicError(f"mosaic message has {len(raw)} sources, over the limit of {MAX_SOURCES}")
    sources = tuple(_source(s, i) for i, s in enumerate(raw))
    seen: set[tuple[str, str]] = set()
    for s in sources:
        if (s.bucket, s.key) in seen:
            raise InvalidMosaicError(f"mosaic message names {s.uri} twice")
        seen.add((s.bucket, s.key))
    return MosaicRef(sources, payload["region"], payload["group"], force)


def _source(raw: Any, index: int) -> MosaicSource:
    where = f"mosaic message sources[{index}]"
    if not isinstance(raw, Mapping):
        raise InvalidMosaicError(f"{where} must be an object with 'bucket' and 'key', got {_short(raw)}")
    unknown = sorted(map(str, raw.keys() - _SOURCE_FIELDS))
    if unknown:
        raise InvalidMosaicError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                                 f"expected {', '.join(sorted(_SOURCE_FIELDS))}")
    for name in ("bucket", "key"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise InvalidMosaicError(f"{where} needs a non-empty string '{name}' (got {_short(raw.get(name))})")
    pins = {}
    for name in ("etag", "version_id"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidMosaicError(f"{where} '{name}' must be a string, got {_short(value)}")
        pins[name] = (value or "").strip().strip('"') or None  # ETags: one unquoted form, as for scene events
    return MosaicSource(raw["bucket"], raw["key"], pins["etag"], pins["version_id"])


def sources_digest(pins: list[tuple[str, str, str]]) -> str:
    """One value standing for a mosaic's exact sources: (bucket, key, ETag) of each, in priority order.

    It is the mosaic record's ``source_etag``, so the rules written for one object (a scene-level failure
    superseded by a success of the same ETag; backfill's "same ETag and configuration") hold for the set.
    Versions are left out: a listing (backfill) has none, and an ETag already names the content.
    """
    text = json.dumps([list(p) for p in pins], separators=(",", ":"))
    return "mosaic-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def valid_group(value: Any) -> bool:
    """A group that can name an output file as it is (no slug needed, so no two groups share an output)."""
    return isinstance(value, str) and GROUP_RE.match(value) is not None


def _name(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip()) and len(value) <= MAX_NAME


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
