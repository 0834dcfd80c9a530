"""The `sceneclip clip` command: exit codes, one-line errors, --json record, no output on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sceneclip.cli.main import main

from .conftest import real

SCENECLIP = str(Path(sys.executable).with_name("sceneclip"))


def test_help_explains_every_option():
    out = CliRunner().invoke(main, ["clip", "--help"]).output
    for opt in ("--region-field", "--region", "--layer", "--all-touched", "--nodata", "--profile", "--resampling",
                "--overview-resampling", "--dst-crs", "--res", "--tap", "--target-aligned-pixels", "--force-resampling",
                "--tmpdir", "--json", "Exit status"):
        assert opt in out


def test_clip_json_record_and_exit_zero(tmp_path):
    out = tmp_path / "bahamas.tif"
    res = subprocess.run(
        [SCENECLIP, "clip", real("landsat7_bahamas_rgb_utm18n.tif"), real("naturalearth_lowres.shp"), str(out),
         "--region-field", "name", "--region", "Bahamas", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    for key in ("source", "boundary", "output", "crs", "transform", "width", "height", "count", "dtype", "nodata",
                "bounds", "valid_pixels", "valid_fraction", "checks", "status", "error_type", "error", "duration_ms",
                "sceneclip_version", "sha256"):
        assert key in rec
    assert rec["status"] == "ok" and rec["boundary"]["region"] == "Bahamas" and rec["crs"] == "EPSG:32618"
    assert len(rec["boundary"]["content_hash"]) == 64
    import hashlib

    assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--region-field", "name", "--region", "Atlantis"], "region 'Atlantis' not found"),
        (["--region-field", "nope", "--region", "x"], "has no field 'nope'"),
        (["--region-field", "name", "--region", "Chile"], "does not overlap"),
        (["--nodata", "-9999", "--region-field", "name", "--region", "Bahamas"], "does not fit uint8"),
    ],
)
def test_bad_input_one_line_error_and_no_output(tmp_path, args, needle):
    out = tmp_path / "o.tif"
    res = CliRunner().invoke(
        main, ["clip", real("landsat7_bahamas_rgb_utm18n.tif"), real("naturalearth_lowres.shp"), str(out), *args]
    )
    assert res.exit_code == 1
    assert needle in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_failed_json_record_has_type_and_reason(tmp_path):
    res = CliRunner().invoke(
        main, ["clip", real("landsat7_bahamas_rgb_utm18n.tif"), real("naturalearth_lowres.shp"), str(tmp_path / "o.tif"),
               "--region-field", "name", "--region", "Chile", "--json"]
    )
    assert res.exit_code == 1
    rec = json.loads(res.stdout)
    assert rec["status"] == "failed" and rec["error_type"] == "NoOverlapError" and "Chile" in rec["error"]


def test_clip_s3_source_through_aws_endpoint_url(s3_bucket, tmp_path):
    """`sceneclip clip s3://...` reads over HTTP from the endpoint AWS_ENDPOINT_URL names (moto here)."""
    client, bucket = s3_bucket
    client.upload_file(real("sentinel2_libya_b09_utm34n.tif"), bucket, "scenes/libya.tif")
    out = tmp_path / "libya.tif"
    res = CliRunner().invoke(main, ["clip", f"s3://{bucket}/scenes/libya.tif", real("naturalearth_lowres.shp"), str(out),
                                    "--region-field", "name", "--region", "Libya", "--json"])
    assert res.exit_code == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["status"] == "ok" and rec["source"] == f"s3://{bucket}/scenes/libya.tif" and out.exists()
