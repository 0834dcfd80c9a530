"""`sceneclip report`: records in, one self-contained HTML page out — checked in a real browser.

Records come from a real batch (real Landsat scene, real county and country boundaries), from the records
table of the Lambda run over moto, and from table dumps. Headless Chromium (Debian's ``chromium``, installed
by ``make browser``) renders the page to a screenshot and dumps its DOM; the tests check that the picture is
not blank, that the DOM has one quick-look per clip and one map path per region, and that the console
stayed clean (with a page that does throw as the control that the check can fail).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
import zlib
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sceneclip.errors import ConfigError
from sceneclip.tools.report import load_records, write_report
from sceneclip.tools.report.png import encode_png
from sceneclip.tools.report.quicklook import render_quicklook

from .conftest import real
from .test_pipeline_e2e import stack  # noqa: F401  (the function's resources on moto)

COUNTIES = ["Boulder", "Grand", "Larimer"]


# --- a real batch report ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def batch_report(tmp_path_factory) -> Path:
    """3 counties clipped from the RMNP Landsat scene + one region (Bahamas) that does not overlap it."""
    from sceneclip.tools.batch import run_batch
    from sceneclip.tools.batch_jobs import BatchJob

    out = tmp_path_factory.mktemp("batch")
    scene = real("landsat_rmnp_rgb_wgs84.tif")
    jobs = [BatchJob(scene, real("colorado_counties.geojson"), c, str(out / f"{c}.tif"), region_field="name")
            for c in COUNTIES]
    jobs.append(BatchJob(scene, real("naturalearth_lowres.shp"), "Bahamas", str(out / "bahamas.tif"), region_field="name"))
    summary = run_batch(jobs, workers=1, report=str(out / "report.jsonl"), progress=False)
    assert (summary.ok, summary.failed) == (3, 1)
    return out / "report.jsonl"


@pytest.fixture(scope="module")
def html_report(batch_report) -> tuple[Path, object]:
    out = batch_report.parent / "report.html"
    return out, write_report([batch_report], out, title="test report")


# --- pictures without GDAL ----------------------------------------------------------------------------------
def _decode_png(data: bytes) -> np.ndarray:
    """Our encoder's output read back by hand (8-bit RGB, filter 0 rows): proves the bytes are a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == int.from_bytes(data[pos + 8 + length:pos + 12 + length], "big")
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height = int.from_bytes(chunks[b"IHDR"][:4], "big"), int.from_bytes(chunks[b"IHDR"][4:8], "big")
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_encoder_round_trip():
    rgb = np.random.default_rng(1).integers(0, 256, (3, 17, 29), dtype=np.uint8)
    back = _decode_png(encode_png(rgb))
    assert back.shape == (17, 29, 3) and (np.moveaxis(back, -1, 0) == rgb).all()
    with pytest.raises(ValueError, match="3 uint8 bands"):
        encode_png(np.zeros((2, 4, 4), np.uint8))


def test_quicklook_draws_the_boundary_and_warns_nothing(batch_report):
    """The demo's ten NotGeoreferencedWarnings came from writing PNGs through GDAL: none may remain."""
    from sceneclip.tools.vectors import load_boundary

    boundary = load_boundary(real("colorado_counties.geojson"), region_field="name", region="Grand")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rgb = render_quicklook(str(batch_report.parent / "Grand.tif"), boundary, size=256)
        png = encode_png(rgb)
    assert max(rgb.shape[1:]) == 256
    yellow = (rgb[0] == 255) & (rgb[1] == 220) & (rgb[2] == 0)
    assert 200 < yellow.sum() < rgb.shape[1] * rgb.shape[2] / 4  # an outline, not a fill
    assert (rgb == 40).all(axis=0).any()  # outside the county: the nodata grey
    assert _decode_png(png).shape == (rgb.shape[1], rgb.shape[2], 3)


# --- reading records ----------------------------------------------------------------------------------------
def test_records_from_every_input_shape(batch_report, tmp_path):
    from boto3.dynamodb.types import TypeSerializer

    entries = load_records([batch_report])
    assert [e.record.status for e in entries].count("ok") == 3 and entries[0].job["region_field"] == "name"
    plain = [e.record.to_dict(drop_none=True) | {"scene": e.record.source, "region": e.record.region} for e in entries]
    (tmp_path / "items.json").write_text(json.dumps(plain))
    ser = TypeSerializer()
    items = json.loads(json.dumps(plain), parse_float=Decimal)  # what `aws dynamodb scan` prints, typed
    (tmp_path / "scan.json").write_text(json.dumps(
        {"Items": [{k: ser.serialize(v) for k, v in item.items()} for item in items], "Count": len(items)},
        default=str))
    (tmp_path / "one.json").write_text(entries[0].record.to_json())
    for name, count in (("items.json", 4), ("scan.json", 4), ("one.json", 1)):
        got = load_records([tmp_path / name])
        assert len(got) == count, name
        assert [e.record.source for e in got] == [e.record.source for e in entries][:count]
        assert got[0].record.valid_fraction == entries[0].record.valid_fraction
        assert got[0].record.boundary == entries[0].record.boundary


def test_bad_records_files_say_where(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a", "boundary": {"file": "", "region": null, "content_hash": ""}, "status": "ok"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: not JSON"):
        load_records([bad])
    bad.write_text('{"hello": 1}\n{"hello": 2}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: not a verification record \(missing source, boundary, status\)"):
        load_records([bad])
    with pytest.raises(ConfigError, match="not found"):
        load_records([tmp_path / "missing.jsonl"])


# --- the page -----------------------------------------------------------------------------------------------
def test_page_is_self_contained_with_everything_in_it(html_report):
    path, summary = html_report
    html = path.read_text()
    assert (summary.records, summary.quicklooks, summary.regions_drawn, summary.footprints_drawn) == (4, 3, 3, 3)
    assert "<script" not in html and "<link" not in html
    urls = re.findall(r"""(?:src|href)=["']([^"']+)""", html)
    assert urls and all(u.startswith("data:image/png;base64,") for u in urls)
    assert re.findall(r"https?://[^\s\"'<]+", html) == ["http://www.w3.org/2000/svg"]  # the SVG namespace only
    assert html.count('<path class="region"') == 3 and html.count('<path class="footprint ok"') == 3
    assert html.count('<tr class="ok">') == 3 and html.count('<tr class="failed">') == 1
    assert "The boundary does not overlap the raster" in html and "Bahamas" in html  # the error in words
    assert "km</text>" in html and all(f">{c}</text>" in html for c in COUNTIES)  # scale bar and labels


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is not installed: `make browser` (Debian package chromium) installs it")


def _chromium_run(page: Path, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{mode[0].strip('-').split('=')[0]}"
    argv = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--window-size=1400,2000",
            *mode, page.resolve().as_uri()]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Uncaught" in line or ":CONSOLE" in line and "ERROR" in line]


def _screenshot(page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    shot = tmp_path / f"{page.stem}.png"
    result = _chromium_run(page, tmp_path, f"--screenshot={shot}")
    assert shot.is_file(), result.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # reading a screenshot, not our output
        with rasterio.open(shot) as ds:
            pixels = ds.read()
    return pixels, _console_errors(result.stderr)


def test_report_renders_in_headless_chromium(html_report, tmp_path):
    path, _ = html_report
    pixels, errors = _screenshot(path, tmp_path)
    assert pixels.shape[1:] == (2000, 1400)
    assert errors == []
    assert float(pixels[:3].std()) > 20  # not blank
    top = pixels[:3, :1100]  # map and quick-looks: the page's upper half
    colours = np.unique(top.reshape(3, -1).T[::97], axis=0)
    assert len(colours) > 500  # imagery, not a flat page
    dom = _chromium_run(path, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)) == 3  # one per clip
    assert len(re.findall(r'<path class="region"', dom.stdout)) == 3  # one per region
    assert len(re.findall(r"<tr class=\"(?:ok|failed)\"", dom.stdout)) == 4  # one per record
    assert _console_errors(dom.stderr) == []


def test_console_check_catches_a_broken_page(tmp_path):
    """Control: the same check reports a page whose script throws (so a clean result means something)."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom from the page')</script></body></html>")
    _, errors = _screenshot(page, tmp_path)
    assert errors and any("boom from the page" in e for e in errors)


# --- the command --------------------------------------------------------------------------------------------
def test_cli_report(batch_report, tmp_path):
    from sceneclip.cli.main import main

    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(batch_report), "--out", str(out), "--title", "Counties"])
    assert result.exit_code == 0, result.output
    assert "4 records (1 failed, 3 ok), 3 quick-looks, 3 regions and 3 footprints" in result.output
    assert "<title>Counties</title>" in out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    result = CliRunner().invoke(main, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 1 and "expected a verification record" in result.output and not (tmp_path / "x.html").exists()


# --- records of the Lambda (records table over moto) --------------------------------------------------------
def test_report_of_the_records_table(stack, tmp_path):
    """Table dump → report: quick-looks read from the output bucket over /vsis3/, regions from the store."""
    import boto3

    from sceneclip.aws.records_table import RecordStore

    from .test_pipeline_e2e import invoke, sample_event, upload_scene

    version, etag = upload_scene(stack)
    invoke(sample_event("s3-put.json", stack, version=version, etag=etag))
    bucket = stack["names"]["InputBucket"]
    stack["s3"].put_object(Bucket=bucket, Key="scenes/broken.tif", Body=b"garbage")
    invoke({"bucket": bucket, "key": "scenes/broken.tif", "region": "Grand"})
    scan = boto3.client("dynamodb").scan(TableName=stack["names"]["RecordsTable"])  # as `aws dynamodb scan` prints it
    dump = tmp_path / "scan.json"
    dump.write_text(json.dumps({"Items": scan["Items"], "Count": scan["Count"]}))
    summary = write_report([dump], tmp_path / "table.html", s3_client=stack["s3"])
    assert summary.records == 5 and summary.by_status == {"ok": 4, "failed": 1} and summary.problems == {}
    assert (summary.quicklooks, summary.regions_drawn, summary.footprints_drawn) == (4, 4, 4)
    html = (tmp_path / "table.html").read_text()
    size = stack["s3"].head_object(Bucket=bucket, Key="scenes/rmnp/rmnp-rgb.tif")["ContentLength"]
    larimer = next(r for r in RecordStore(stack["names"]["RecordsTable"]).scan() if r["region"] == "Larimer")
    assert f"{larimer['bytes_fetched'] / size:.1%}" in html  # bytes fetched vs the object's size (HEAD)
    assert "The source cannot be opened or decoded as a raster" in html  # RasterReadError in words
    assert "X-Amz-" not in html and "Signature=" not in html
