"""Uploads report the object *they* wrote: ETag and VersionId from the PutObject / CompleteMultipartUpload
response; a failed multipart upload is aborted and leaves nothing behind (moto's server)."""

from __future__ import annotations

import hashlib
import io

import pytest

from sceneclip.aws.s3 import upload
from sceneclip.errors import UploadError

MIB = 1024 * 1024


def test_small_upload_returns_put_etag_and_version(s3_bucket):
    s3, bucket = s3_bucket
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    body = b"x" * 1000
    sent = upload(s3, io.BytesIO(body), bucket, "k.tif", content_type="image/tiff", metadata={"a": "b"})
    head = s3.head_object(Bucket=bucket, Key="k.tif")
    assert sent.etag == hashlib.md5(body).hexdigest() == head["ETag"].strip('"')
    assert sent.version_id and sent.version_id == head["VersionId"]
    # A later writer: the first upload's answer still names the first object version, not the current one.
    upload(s3, io.BytesIO(b"y" * 10), bucket, "k.tif", content_type="image/tiff", metadata={})
    old = s3.get_object(Bucket=bucket, Key="k.tif", VersionId=sent.version_id)
    assert old["Body"].read() == body and old["ETag"].strip('"') == sent.etag


def test_multipart_upload_etag_from_complete(s3_bucket):
    s3, bucket = s3_bucket
    body = bytes(range(256)) * (13 * MIB // 256)  # 13 MiB: parts of 5, 5, 3 MiB above a 6 MiB threshold
    sent = upload(s3, io.BytesIO(body), bucket, "big.tif", content_type="image/tiff", metadata={},
                  threshold=6 * MIB, part_size=5 * MIB)
    assert sent.etag.endswith("-3")
    obj = s3.get_object(Bucket=bucket, Key="big.tif")
    assert obj["ETag"].strip('"') == sent.etag and obj["Body"].read() == body


class _Breaks(io.BytesIO):
    """A file object whose read fails after ``after`` bytes (a local disk error mid-upload)."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data)
        self.after = after

    def read(self, n: int = -1) -> bytes:
        if self.tell() >= self.after:
            raise OSError("disk read failed")
        return super().read(n)


def test_failed_multipart_upload_is_aborted(s3_bucket):
    s3, bucket = s3_bucket
    with pytest.raises(Exception):  # the read error, typed by the classifier
        upload(s3, _Breaks(b"z" * (20 * MIB), after=11 * MIB), bucket, "broken.tif", content_type="image/tiff",
               metadata={}, threshold=6 * MIB, part_size=5 * MIB)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_put_refused_is_typed(s3_bucket):
    s3, _ = s3_bucket
    with pytest.raises(Exception) as info:
        upload(s3, io.BytesIO(b"a"), "no-such-bucket-sceneclip", "k.tif", content_type="image/tiff", metadata={})
    assert not isinstance(info.value, UploadError) and "NoSuchBucket" in str(info.value)
