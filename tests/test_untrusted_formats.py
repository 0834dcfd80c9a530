"""Issue 15, finding 1: only GeoTIFFs are read, whatever a file's name says.

Each document below opens and reads its canary through plain ``rasterio.open`` (GDAL 3.12 and 3.10; the raw
band only on 3.10), and was clipped ``ok`` before the driver allow-list. Uploaded to moto's server as
``.tif`` and delivered through the handler, each must end in a permanent ``failed`` record, no output, no
trace of the canary in records or logs, and no request to the loopback listeners it names.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sceneclip.aws import handler

from .test_pipeline_e2e import invoke, outputs, records, stack  # noqa: F401  (fixture)

GEO = "<SRS>EPSG:4326</SRS><GeoTransform>-105.8,0.01,0,40.5,0,-0.01</GeoTransform>"
FOOTPRINT = [[[-105.8, 39.86], [-105.16, 39.86], [-105.16, 40.5], [-105.8, 40.5], [-105.8, 39.86]]]


class _Counting(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def listener():
    """A loopback HTTP server that counts every request (stands in for 169.254.169.254 and a WMS host)."""
    cls = type("Listener", (_Counting,), {"hits": []})
    server = HTTPServer(("127.0.0.1", 0), cls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", cls
    server.shutdown()
    server.server_close()


@pytest.fixture
def canary(tmp_path):
    """A local GeoTIFF and raw file of value 77 under a unique name that must never show up anywhere."""
    token = f"canary-{uuid.uuid4().hex}"
    path = tmp_path / f"{token}.tif"
    prof = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326",
                transform=from_origin(-105.8, 40.5, 0.01, 0.01))
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(np.full((1, 64, 64), 77, "uint8"))
    raw = tmp_path / f"{token}.raw"
    raw.write_bytes(bytes([77]) * 64 * 64)
    index = tmp_path / f"{token}-index.geojson"
    index.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"location": str(path)}, "geometry": {"type": "Polygon", "coordinates": FOOTPRINT}}]}))
    return {"token": token, "tif": str(path), "raw": str(raw), "index": str(index)}


def documents(canary: dict, url: str) -> dict[str, str]:
    band = '<VRTRasterBand dataType="Byte" band="1"><SimpleSource><SourceFilename relativeToVRT="0">{}</SourceFilename><SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>'
    return {
        "vrt-local": f'<VRTDataset rasterXSize="64" rasterYSize="64">{GEO}{band.format(canary["tif"])}</VRTDataset>',
        "vrt-metadata": f'<VRTDataset rasterXSize="64" rasterYSize="64">{GEO}'
        f'{band.format("/vsicurl/" + url + "/latest/meta-data/iam/security-credentials/role")}</VRTDataset>',
        "vrt-raw": f'<VRTDataset rasterXSize="64" rasterYSize="64">{GEO}<VRTRasterBand dataType="Byte" band="1" '
        f'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">{canary["raw"]}</SourceFilename>'
        "<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset></VRTRasterBand></VRTDataset>",
        "wms": f"<GDAL_WMS><Service name=\"TMS\"><ServerUrl>{url}/tiles/${{z}}/${{x}}/${{y}}.png</ServerUrl></Service>"
        "<DataWindow><UpperLeftX>-105.8</UpperLeftX><UpperLeftY>40.5</UpperLeftY><LowerRightX>-105.16</LowerRightX>"
        "<LowerRightY>39.86</LowerRightY><TileLevel>0</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
        "<YOrigin>top</YOrigin></DataWindow><Projection>EPSG:4326</Projection><BlockSizeX>256</BlockSizeX>"
        "<BlockSizeY>256</BlockSizeY><BandsCount>1</BandsCount></GDAL_WMS>",
        "gti": f"<GDALTileIndexDataset><IndexDataset>{canary['index']}</IndexDataset><LocationField>location</LocationField>"
        "<SRS>EPSG:4326</SRS><ResX>0.01</ResX><ResY>0.01</ResY><DataType>Byte</DataType><BandCount>1</BandCount></GDALTileIndexDataset>",
        "stac-json": json.dumps({"type": "FeatureCollection", "features": [{
            "type": "Feature", "stac_version": "1.0.0", "id": "x", "bbox": [-105.8, 39.86, -105.16, 40.5],
            "stac_extensions": ["https://stac-extensions.github.io/projection/v1.0.0/schema.json"],
            "geometry": {"type": "Polygon", "coordinates": FOOTPRINT},
            "properties": {"datetime": "2020-01-01T00:00:00Z", "proj:epsg": 4326, "proj:shape": [64, 64],
                           "proj:transform": [0.01, 0, -105.8, 0, -0.01, 40.5]},
            "assets": {"data": {"href": canary["tif"], "type": "image/tiff"}}}]}),
    }


NAMES = ["vrt-local", "vrt-metadata", "vrt-raw", "wms", "gti", "stac-json"]


@pytest.mark.parametrize("region", ["Larimer", None], ids=["clip", "spatial-lookup"])
@pytest.mark.parametrize("name", NAMES)
def test_indirection_formats_named_tif_are_refused(stack, canary, listener, caplog, monkeypatch, name, region):
    url, hits = listener
    bucket = stack["names"]["InputBucket"]
    monkeypatch.setenv("SCENECLIP_INPUT_BUCKETS", bucket)
    handler._WARM_START_CACHE.clear()
    key = f"scenes/{name}.tif"
    stack["s3"].put_object(Bucket=bucket, Key=key, Body=documents(canary, url)[name].encode())
    event = {"bucket": bucket, "key": key, **({"region": region} if region else {})}
    with caplog.at_level(logging.DEBUG):
        resp = invoke(event)
    assert resp["statusCode"] == 200
    (result,) = resp["results"]
    assert result["status"] == "failed" and result["error_type"] == "RasterReadError"
    assert "SCENECLIP_ALLOWED_DRIVERS" in result["error"]
    (rec,) = records(stack)
    assert rec["status"] == "failed" and rec["transient"] is False
    assert outputs(stack) == [] and outputs(stack, ".json") == []
    assert hits.hits == []  # no request left for any URL the document names
    text = caplog.text + json.dumps(rec, default=str)
    assert canary["token"] not in text


def test_plain_rasterio_would_read_them(canary, listener, tmp_path):
    """The reproduction is real: without the allow-list GDAL reads the canary through these documents.

    Run in a fresh process without GDAL_SKIP (this one has it, from the handler's import)."""
    import os
    import subprocess
    import sys

    url, _ = listener
    docs = documents(canary, url)
    names = ["vrt-local", "gti", "stac-json"] + (["vrt-raw"] if rasterio.__gdal_version__ < "3.11" else [])
    for name in names:
        (tmp_path / f"{name}.tif").write_text(docs[name])
    code = ("import sys, rasterio\n"
            "for p in sys.argv[1:]:\n"
            "    with rasterio.open(p) as ds: plain = int(ds.read().max())\n"
            "    try:\n"
            "        rasterio.open(p, driver='GTiff'); allowed = 'opened'\n"
            "    except rasterio.errors.RasterioIOError: allowed = 'refused'\n"
            "    print(plain, allowed)\n")
    env = {k: v for k, v in os.environ.items() if k != "GDAL_SKIP"}
    out = subprocess.run([sys.executable, "-c", code, *[str(tmp_path / f"{n}.tif") for n in names]],
                         capture_output=True, text=True, timeout=120, env=env, check=True)
    assert out.stdout.split("\n")[: len(names)] == ["77 refused"] * len(names)


def test_gdal_skip_removes_indirection_drivers_at_cold_start(tmp_path):
    """In a fresh process the handler's import puts VRT/WMS/GTI in GDAL_SKIP before GDAL registers drivers."""
    import subprocess
    import sys

    code = ("import sceneclip.aws.handler, rasterio\n"
            "with rasterio.Env() as env:\n"
            "    d = env.drivers()\n"
            "print(sorted(n for n in ('VRT', 'WMS', 'GTI', 'STACIT', 'GTiff') if n in d))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['GTiff']"
