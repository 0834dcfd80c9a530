"""The Lambda path with a region grid: a store built with --grid makes every clip land on that grid."""

from __future__ import annotations

import rasterio

from .conftest import real
from .test_pipeline_e2e import invoke, out_key, records, sample_event, stack, upload_scene  # noqa: F401 (fixture)


def test_store_grid_reaches_the_lambda_clip_and_its_stac_item(stack):
    import json

    from sceneclip.tools.store_build import build_store

    # Rebuild the fixture's store with a default grid: UTM 13N at 100 m, target-aligned.
    build_store(real("colorado_counties.geojson"), "name", stack["store"], s3_client=stack["s3"], grid="EPSG:32613,100")
    version, etag = upload_scene(stack)
    resp = invoke(sample_event("s3-put.json", stack, version=version, etag=etag))
    assert resp["statusCode"] == 200 and all(r["status"] == "ok" for r in resp["results"]), resp
    recs = {r["region"]: r for r in records(stack)}
    grand = recs["Grand"]
    assert grand["crs"] == "EPSG:32613" and grand["checks"]["target_aligned"]
    key = out_key(stack, "Grand")
    body = stack["s3"].get_object(Bucket=stack["names"]["OutputBucket"], Key=key)["Body"].read()
    with rasterio.MemoryFile(body) as mem, mem.open() as ds:
        assert ds.crs.to_epsg() == 32613 and ds.res == (100.0, 100.0)
        assert ds.transform.c % 100 == 0 and ds.transform.f % 100 == 0
    item = json.loads(stack["s3"].get_object(Bucket=stack["names"]["OutputBucket"],
                                             Key=key[: -len(".tif")] + ".stac.json")["Body"].read())
    assert item["properties"].get("proj:code", item["properties"].get("proj:epsg")) in ("EPSG:32613", 32613)
