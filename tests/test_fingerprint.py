"""One definition of "options that change the output": ClipOptions.fingerprint feeds the Lambda's configuration
hash and batch's resume rule alike."""

from __future__ import annotations

import dataclasses

import pytest

from sceneclip.aws.config import Settings
from sceneclip.core.naming import DEFAULT_TEMPLATE
from sceneclip.core.plan import ClipOptions
from sceneclip.errors import ConfigError
from sceneclip.tools.batch import options_hash

ENV = {"SCENECLIP_OUTPUT_BUCKET": "out", "SCENECLIP_BOUNDARIES": "s3://b/store", "SCENECLIP_RECORDS_TABLE": "t"}
CHANGED = {"all_touched": True, "invert": True, "crop": False, "pad": True, "nodata": 7.0, "profile": "zstd",
           "overview_resampling": "nearest", "resampling": "bilinear", "dst_crs": "EPSG:4326", "resolution": (10.0, 10.0),
           "target_aligned": True, "src_nodata": 0.0}


@pytest.mark.parametrize("name", ClipOptions.OUTPUT_FIELDS)
def test_every_output_option_changes_both_hashes(name):
    base = ClipOptions()
    changed = dataclasses.replace(base, **{name: CHANGED[name]})
    assert changed.fingerprint() != base.fingerprint()
    assert options_hash(changed) != options_hash(base)


def test_how_options_do_not_change_the_fingerprint():
    base = ClipOptions()
    assert ClipOptions(memory_limit=1, tmpdir="/x", samples_per_chunk=2, gdal_cache_mb=8).fingerprint() == base.fingerprint()
    assert ClipOptions(nodata=float("nan")).fingerprint() == ClipOptions(nodata=float("nan")).fingerprint()


def test_lambda_config_hash_follows_the_options_and_the_output_location():
    base = Settings.from_env(ENV)
    assert Settings.from_env({**ENV, "SCENECLIP_ALL_TOUCHED": "true"}).config_hash != base.config_hash
    assert Settings.from_env({**ENV, "SCENECLIP_OUTPUT_PREFIX": "other/"}).config_hash != base.config_hash
    assert Settings.from_env({**ENV, "SCENECLIP_MEMORY_LIMIT_MB": "64"}).config_hash == base.config_hash
    # The output location includes the output key template (and the {collection} it may name).
    assert base.config_hash == base.clip_options().fingerprint(output="s3://out/clipped/",
                                                               output_key=DEFAULT_TEMPLATE, collection=None)
    assert Settings.from_env({**ENV, "SCENECLIP_OUTPUT_KEY": "{prefix}{key_slug}"}).config_hash != base.config_hash
    # A stacked STAC Item is another output; stack=false (the default) keeps the per-asset hash.
    assert Settings.from_env({**ENV, "SCENECLIP_STAC_STACK": "true"}).config_hash != base.config_hash
    assert Settings.from_env({**ENV, "SCENECLIP_STAC_STACK": "false"}).config_hash == base.config_hash


def test_invert_means_no_crop_everywhere_and_pad_with_invert_is_refused():
    assert ClipOptions(invert=True).crop is False
    assert Settings.from_env({**ENV, "SCENECLIP_INVERT": "true"}).clip_options().crop is False
    with pytest.raises(ConfigError, match="pad"):
        Settings.from_env({**ENV, "SCENECLIP_INVERT": "true", "SCENECLIP_PAD": "true"})
