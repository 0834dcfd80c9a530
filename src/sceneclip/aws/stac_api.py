"""``sceneclip backfill --stac-api URL``: the Items a STAC API search returns, through pystac-client.

The search is the API's own (``collections``, ``intersects``, ``datetime``, paging by its ``next`` links), so
only Items the operator asked for are listed. ``--intersects`` names a region of the boundary store: its
geometry, carried to EPSG:4326 (edges densified first, so a UTM region's straight edges stay inside the
search geometry's curve), is what the API intersects with. A CQL2-text ``--filter`` goes to the API when it
declares the Filter conformance class; it is *also* evaluated here with the function's own evaluator
(:mod:`sceneclip.core.cql2_text`), so an API that lacks the class, or reads CQL2 differently, cannot widen
what is sent. Items it rejects are counted ``filtered-by-search`` and cost no HEAD.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from sceneclip.core.stac_filter import ItemFilter
from sceneclip.errors import ConfigError

SEARCH_CRS = "EPSG:4326"  # GeoJSON's, which STAC API ``intersects`` takes
DENSIFY_PARTS = 64  # vertices added per bbox width along each edge before reprojection
PAGE_SIZE = 100  # Items per page asked of the API (servers cap it themselves)


@dataclass(frozen=True)
class ApiSearch:
    """One STAC API item search: what ``backfill --stac-api`` was asked for."""

    url: str
    collections: tuple[str, ...] = ()
    intersects: Mapping[str, Any] | None = None
    datetime: str | None = None
    filter: str | None = None

    def describe(self) -> str:
        """A short label for logs and the summary (the API and what is searched)."""
        parts = [self.url]
        if self.collections:
            parts.append("collections=" + ",".join(self.collections))
        if self.datetime:
            parts.append(f"datetime={self.datetime}")
        if self.intersects is not None:
            parts.append("intersects=region")
        if self.filter:
            parts.append(f"filter={self.filter}")
        return " ".join(parts)


def region_search_geometry(store: Any, region: str) -> dict[str, Any]:
    """The store region's geometry in EPSG:4326 as GeoJSON, edges densified before reprojection."""
    import shapely
    from rasterio.crs import CRS

    from sceneclip.core.geometry import transform_geometry

    geom = store.geometry(region)
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / DENSIFY_PARTS
    dense = shapely.segmentize(geom, step) if step > 0 else geom
    out = transform_geometry(dense, CRS.from_user_input(store.crs), CRS.from_user_input(SEARCH_CRS))
    return shapely.geometry.mapping(out)


def search_items(search: ApiSearch, *, rejected: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Every Item the API returns for ``search`` that also passes its filter here, in the API's order.

    ``rejected`` (when given) collects the ids of Items the local filter refused.
    """
    from pystac_client import Client
    from pystac_client.conformance import ConformanceClasses
    from pystac_client.exceptions import APIError

    local = ItemFilter.parse(search.filter, setting="--filter") if search.filter else None
    try:
        client = Client.open(search.url)
        kwargs: dict[str, Any] = {"limit": PAGE_SIZE, "max_items": None}
        if search.collections:
            kwargs["collections"] = list(search.collections)
        if search.intersects is not None:
            kwargs["intersects"] = dict(search.intersects)
        if search.datetime:
            kwargs["datetime"] = search.datetime
        if search.filter and client.conforms_to(ConformanceClasses.FILTER):
            kwargs.update(filter=search.filter, filter_lang="cql2-text")
        for item in client.search(**kwargs).items_as_dicts():
            if local is not None and not local.matches(item):
                if rejected is not None:
                    rejected.append(str(item.get("id")))
                continue
            yield item
    except (APIError, OSError, ValueError) as exc:
        # requests' errors are OSErrors; a bad datetime range is pystac-client's ValueError.
        raise ConfigError(f"the STAC API search {search.describe()} failed: {str(exc)[:300]}") from exc
