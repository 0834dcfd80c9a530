"""Output names: the one place that turns region ids and source keys into safe, collision-free key parts.

Every output location (Lambda, worker, ``sceneclip batch``, the boundary store's region files) is derived
here, so the rules hold everywhere:

* a **slug** keeps ASCII letters, digits, ``-``, ``_``, ``.`` and ``/``; every other character (space, ``+``,
  ``%``, ``?``, non-ASCII…) becomes ``_``, so no character that needs URL encoding reaches a key, an href or
  a file name. ``..`` and empty path segments are folded too (``a/../b`` cannot climb).
* :func:`key_slug` is **injective**: a key that is already safe (and ends in ``.tif``/``.tiff`` in any case)
  is kept as it is, extension included (``c.tif``, ``c.tiff``, ``c.TIF`` stay three names); a key that had to
  be changed gets a short hash of the original key, so ``a b.tif`` and ``a_b.tif`` cannot meet.
* region slugs are not hashed (people read them); two region ids with one slug are refused when the store is
  built (:func:`find_slug_collisions`).

An :class:`OutputTemplate` (``SCENECLIP_OUTPUT_KEY`` / ``--output-key``) is a ``str.format`` template over
:data:`PLACEHOLDERS`; unknown placeholders are refused when it is parsed and a placeholder without a value for
a job is refused when it is rendered, each with an error naming it.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from sceneclip.errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")
_TIFF_EXT = re.compile(r"\.tiff?$", re.IGNORECASE)
KEY_HASH_CHARS = 10  # 40 bits of sha256: a second key needs ~10^6 slug-equal siblings to reach even odds

PLACEHOLDERS: dict[str, str] = {
    "prefix": "SCENECLIP_OUTPUT_PREFIX (ends in '/', may be empty)",
    "region": "the region id, verbatim (may need URL encoding: prefer {region_slug})",
    "region_slug": "the region id as a slug (unique within a store: the build refuses collisions)",
    "bucket": "the source bucket",
    "key": "the source key, verbatim",
    "key_stem": "the source key without its extension, verbatim",
    "key_slug": "the source key as an injective slug, extension kept (c.tif, c.tiff, c.TIF stay distinct)",
    "group": "the source key's folder as a slug ('' at the bucket root)",
    "collection": "SCENECLIP_STAC_COLLECTION (an error when unset)",
    "item_id": "the STAC Item id: {key_stem}'s file name and the region, as a slug",
    "date": "the source object's date, YYYY-MM-DD (S3 LastModified / event time; file mtime in batch)",
}

# Names every source apart whatever bucket it came from; see the module docstring for why it cannot collide.
DEFAULT_TEMPLATE = "{prefix}{region_slug}/{bucket}/{key_slug}"


def slug(text: str, *, keep_slash: bool = True) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-/]`` replaced by ``_`` (never empty).

    Path segments that are empty, ``.`` or ``..`` are replaced by ``_`` so a slug never climbs or doubles a
    slash; with ``keep_slash=False`` ``/`` is replaced as well (a single file-name component).
    """
    out = _UNSAFE.sub("_", str(text))
    if not keep_slash:
        out = out.replace("/", "_")
    parts = ["_" if p in ("", ".", "..") else p for p in out.split("/")]
    return "/".join(parts) or "_"


def is_safe(text: str) -> bool:
    """True when ``text`` is already its own slug."""
    return slug(text) == text


def key_slug(key: str) -> str:
    """An injective slug of a source key that always ends in ``.tif``/``.tiff`` (see the module docstring)."""
    if is_safe(key) and _TIFF_EXT.search(key):
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:KEY_HASH_CHARS]
    match = _TIFF_EXT.search(key)
    stem, ext = (key[: match.start()], match.group(0)) if match else (key, "")
    return f"{slug(stem)}-h{digest}{slug(ext) if ext else '.tif'}"


def key_stem(key: str) -> str:
    """The key without its final extension (``scenes/c.tif`` → ``scenes/c``)."""
    root, _ = posixpath.splitext(key)
    return root


def item_id(key: str, region: str | None) -> str:
    """A STAC Item id: the source file's stem and the region, as one slug component."""
    stem = posixpath.basename(key_stem(key)) or "scene"
    return slug(f"{stem}-{region}" if region else stem, keep_slash=False)


def find_slug_collisions(ids: Iterable[str]) -> dict[str, list[str]]:
    """Slugs shared by more than one id → the ids (sorted); empty when every id has its own slug."""
    by_slug: dict[str, set[str]] = {}
    for rid in ids:
        by_slug.setdefault(slug(rid), set()).add(rid)
    return {s: sorted(v) for s, v in sorted(by_slug.items()) if len(v) > 1}


def href_for(path_or_url: str) -> str:
    """A valid IRI reference for a key, path or URL: percent-encodes spaces, ``%``, ``?``, ``#`` and controls.

    ``s3://bucket/a b.tif`` → ``s3://bucket/a%20b.tif``; the scheme and ``/`` stay. Non-ASCII characters are
    percent-encoded as UTF-8 too: a URI is also an IRI reference, and every URL parser reads it.
    """
    scheme, sep, rest = path_or_url.partition("://")
    if not sep:
        scheme, rest = "", path_or_url
    encoded = quote(rest, safe="/:@!$&'()*+,;=-._~")
    return f"{scheme}://{encoded}" if sep else encoded


def stac_key_for(cog_key: str) -> str:
    """Where the STAC Item of a COG goes: beside it; ``a/b.tif`` → ``a/b.stac.json``, any other name gets
    ``.stac.json`` appended (``c.tiff`` → ``c.tiff.stac.json``) so ``c.tif`` and ``c.tiff`` keep two Items."""
    if cog_key.endswith(".tif"):
        return cog_key[: -len(".tif")] + ".stac.json"
    return cog_key + ".stac.json"


@dataclass(frozen=True)
class NameFields:
    """What one job offers the template (``None`` = no value for this job)."""

    prefix: str
    region: str | None
    bucket: str | None
    key: str
    date: str | None = None
    collection: str | None = None

    def values(self) -> dict[str, str | None]:
        folder = posixpath.dirname(self.key)
        return {
            "prefix": self.prefix,
            "region": self.region,
            "region_slug": slug(self.region) if self.region is not None else None,
            "bucket": self.bucket,
            "key": self.key,
            "key_stem": key_stem(self.key),
            "key_slug": key_slug(self.key),
            "group": slug(folder) if folder else "",
            "collection": self.collection,
            "item_id": item_id(self.key, self.region),
            "date": self.date,
        }


@dataclass(frozen=True)
class OutputTemplate:
    """A parsed output-key template. Build with :meth:`parse`; :meth:`render` gives the COG key.

    The rendered key is the COG's key; ``.tif`` is appended when it does not already end in ``.tif``/``.tiff``.
    """

    text: str
    fields: tuple[str, ...]
    source: str = "SCENECLIP_OUTPUT_KEY"

    @classmethod
    def parse(cls, text: str | None, *, source: str = "SCENECLIP_OUTPUT_KEY") -> OutputTemplate:
        """Check the template once (at cold start / CLI parse): every placeholder known, no format specs."""
        text = (text or "").strip() or DEFAULT_TEMPLATE
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ConfigError(f"{source}={text!r} is not a valid template: {exc}") from exc
        names = [name for _, name, spec, conv in parsed if name is not None]
        unknown = sorted({n for n in names if n not in PLACEHOLDERS})
        if unknown:
            raise ConfigError(f"{source}={text!r}: unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                              f"known: {', '.join('{' + n + '}' for n in PLACEHOLDERS)}")
        if any(spec or conv for _, name, spec, conv in parsed if name is not None):
            raise ConfigError(f"{source}={text!r}: format specs and conversions ({{x:...}}, {{x!r}}) are not allowed")
        if text.startswith("/"):
            raise ConfigError(f"{source}={text!r} must not start with '/'")
        return cls(text, tuple(dict.fromkeys(names)), source)

    @property
    def is_default(self) -> bool:
        return self.text == DEFAULT_TEMPLATE

    def render(self, fields: NameFields | Mapping[str, str | None]) -> str:
        """The COG key for one job; a placeholder the job has no value for raises ConfigError naming it."""
        values = fields.values() if isinstance(fields, NameFields) else dict(fields)
        missing = [n for n in self.fields if values.get(n) is None]
        if missing:
            raise ConfigError(f"{self.source}={self.text!r}: no value for {', '.join('{' + n + '}' for n in missing)} "
                              f"for this job ({'; '.join(f'{n}: {PLACEHOLDERS[n]}' for n in missing)})")
        key = self.text.format(**{n: values[n] for n in self.fields})
        key = re.sub(r"/{2,}", "/", key).lstrip("/")
        if not key or key.endswith("/"):
            raise ConfigError(f"{self.source}={self.text!r} renders {key!r}, which names no object")
        return key if _TIFF_EXT.search(key) else key + ".tif"
