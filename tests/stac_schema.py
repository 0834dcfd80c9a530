"""Offline STAC Item validation against the vendored JSON Schemas (tests/data/stac/schemas, see its PROVENANCE.md).

The schemas are stored under the path of their URL (``https://stac-extensions.github.io/raster/v1.1.0/schema.json``
is ``stac-extensions.github.io/raster/v1.1.0/schema.json``), so the registry maps each URL to its file without a
table to keep in step. Nothing is ever downloaded: a ``$ref`` or a ``stac_extensions`` URL that is not vendored
fails the test (a schema we cannot check is a failure, not a skip).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

SCHEMA_DIR = Path(__file__).resolve().parent / "data" / "stac" / "schemas"
CORE_ITEM = "https://schemas.stacspec.org/v{version}/item-spec/json-schema/item.json"
# "format" is only an annotation unless a checker is given. jsonschema checks date-time (RFC 3339, as STAC asks)
# only when rfc3339-validator is importable (locked, through openapi-schema-validator): without it the check
# would pass silently, so its absence fails here. "uri" stays unchecked (rfc3987 is not installed).
FORMAT_CHECKER = Draft7Validator.FORMAT_CHECKER
assert "date-time" in FORMAT_CHECKER.checkers, "rfc3339-validator is missing: date-time formats would go unchecked"


def _refuse(uri: str) -> Resource:
    # referencing calls this for any URI the registry lacks; raising NoSuchResource makes jsonschema fail loudly.
    raise NoSuchResource(ref=f"{uri} (not vendored in {SCHEMA_DIR}; validation never downloads)")


@lru_cache(maxsize=1)
def schema_registry() -> Registry:
    """Every vendored schema, keyed by the https URL its path spells."""
    resources = []
    for path in sorted(SCHEMA_DIR.rglob("*.json")):
        url = "https://" + path.relative_to(SCHEMA_DIR).as_posix()
        resources.append((url, Resource.from_contents(json.loads(path.read_text()))))
    assert resources, f"no schema vendored under {SCHEMA_DIR}"
    return Registry(retrieve=_refuse).with_resources(resources)


def schema_urls(item: Mapping[str, Any]) -> list[str]:
    """The schemas an Item declares: the core Item schema of its ``stac_version`` and each ``stac_extensions`` URL."""
    return [CORE_ITEM.format(version=item.get("stac_version")), *item.get("stac_extensions", [])]


def schema_errors(item: Mapping[str, Any]) -> list[str]:
    """Readable violations of ``item`` against every schema it declares (empty: valid).

    An undeclared or unknown schema URL is itself an error, so a new extension in the writer cannot slip
    past the tests unchecked.
    """
    registry = schema_registry()
    errors: list[str] = []
    for url in schema_urls(item):
        key = url.split("#")[0]
        try:
            registry.get_or_retrieve(key)
        except Exception:  # noqa: BLE001 - referencing wraps the refusal in its own error types
            errors.append(f"{url}: schema not vendored (add it to {SCHEMA_DIR.name}/ with provenance)")
            continue
        validator = Draft7Validator({"$ref": key}, registry=registry, format_checker=FORMAT_CHECKER)
        try:
            found = sorted(validator.iter_errors(item), key=lambda e: list(e.absolute_path))
        except Unresolvable as exc:  # a $ref inside the schema (e.g. PROJJSON's) points outside the vendored set
            errors.append(f"{url}: cannot resolve a $ref offline: {exc}")
            continue
        errors.extend(f"{url}: {_explain(e)}" for e in found)
    return errors


def _explain(err: ValidationError) -> str:
    """The cause of an error, not its wrapper. Extension schemas put everything in ``oneOf`` (Item or Collection),
    whose own message is the whole Item "is not valid under any of the given schemas": descend into the branch
    that is not refused for its ``type`` (the Feature one) and take its deepest error."""
    while err.context:
        branches: dict[Any, list[ValidationError]] = {}
        for e in err.context:
            branches.setdefault(e.relative_schema_path[0], []).append(e)
        typed = [b for b in branches.values() if not any(list(e.absolute_path) == ["type"] for e in b)]
        err = max((e for b in typed or branches.values() for e in b), key=lambda e: len(e.absolute_path))
    where = "/".join(map(str, err.absolute_path)) or "<item>"
    message = err.message if len(err.message) <= 300 else err.message[:300] + "…"
    return f"{where}: {message}"


def assert_valid_item(item: Mapping[str, Any]) -> None:
    """Assert ``item`` is strict JSON and validates against the core Item schema and every declared extension."""
    json.dumps(item, allow_nan=False)  # strict JSON: no NaN/Infinity anywhere
    errors = schema_errors(item)
    assert not errors, "\n".join(errors)
