"""Publishing one clip so that its record always names exactly the object in the bucket.

Steps, for one (scene, region) row of the records table:

1. **claim** the row (conditional UpdateItem): refused when the row records a *newer* source version
   (→ ``superseded``: nothing is uploaded) or while another writer's lease is live (→ :class:`OutputBusyError`,
   retried). The claim serialises upload + record per output, so two racing clips cannot leave one's record
   over the other's object.
2. **upload** the COG (and its STAC Item beside it): the ETag and VersionId come from the PutObject /
   CompleteMultipartUpload response, never from a later HEAD.
3. **record**, conditional on still holding the lease; the record write is the arbiter. On any failure the
   lease is released so a retry can claim again at once.
"""

from __future__ import annotations

import logging
import posixpath
import uuid
from dataclasses import dataclass, replace
from typing import Any

from sceneclip import __version__
from sceneclip.aws.records_table import RecordStore, SourceOrder
from sceneclip.aws.s3 import COG_CONTENT_TYPE, put_json, upload
from sceneclip.core.naming import href_for, stac_key_for
from sceneclip.core.records import VerificationRecord
from sceneclip.errors import OutputBusyError, UploadError

log = logging.getLogger("sceneclip.aws.publish")

UPLOAD_LEASE_S = 900  # the longest Lambda timeout: a crashed writer's claim is free again after it
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Destination:
    """Where one clip goes and what it is ordered by."""

    bucket: str
    key: str
    order: SourceOrder

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def superseded_record(record: VerificationRecord, order: SourceOrder, newer: dict[str, Any] | None) -> VerificationRecord:
    """The result for a clip of an older source version than the one recorded: reported, never published."""
    newer_version = (newer or {}).get("source_version") or (newer or {}).get("source_etag") or "a newer version"
    return replace(
        record, status=SUPERSEDED, output=None, output_etag=None, output_version=None,
        error_type="SupersededSourceError",
        error=(f"{record.source} was overwritten: the output is {newer_version}'s (modified "
               f"{(newer or {}).get('source_modified', '?')}); this version (modified {order.last_modified}) is not published"),
        transient=False,
    )


class Publisher:
    """Claim → upload → conditional record, over the pipeline's S3 client and records table."""

    def __init__(self, s3: Any, records: RecordStore, *, write_stac: bool) -> None:
        self.s3 = s3
        self.records = records
        self.write_stac = write_stac

    def newer_recorded(self, record: VerificationRecord, order: SourceOrder) -> dict[str, Any] | None:
        """The recorded row when it is of a newer source version than ``order`` (checked before clipping)."""
        current = self.records.get(record.source, record.boundary.region or "")
        return current if current and "status" in current and order.older_than(current) else None

    def publish(self, record: VerificationRecord, cog: Any, dest: Destination, metadata: dict[str, str], *,
                stac: bool = True) -> VerificationRecord:
        """Upload ``cog`` (a ClipOutput) to ``dest`` and write ``record`` naming it; see the module docstring.
        ``stac=False``: no Item beside the COG (an archive Item's assets get one Item per region instead)."""
        scene, region = record.source, record.boundary.region or ""
        writer = uuid.uuid4().hex
        state = self.records.claim(scene, region, order=dest.order, writer=writer, lease_s=UPLOAD_LEASE_S)
        if state == SUPERSEDED:
            return superseded_record(record, dest.order, self.records.get(scene, region))
        if state == "busy":
            raise OutputBusyError(f"another clip is writing {dest.uri} for {scene} region {region!r}; retrying after it")
        try:
            record = replace(record, output=dest.uri)
            item = self._stac_item(record, cog, dest) if stac else None  # reads the COG: before the upload consumes the file
            sent = upload(self.s3, cog.fileobj(), dest.bucket, dest.key, content_type=COG_CONTENT_TYPE,
                          metadata={**metadata, "sceneclip-version": __version__, "sha256": record.sha256 or ""})
            record = replace(record, output_etag=sent.etag, output_version=sent.version_id)
            if item is not None:
                put_json(self.s3, dest.bucket, stac_key_for(dest.key), item.to_dict(include_self_link=False,
                                                                                     transform_hrefs=False))
            if not self.records.put(record, order=dest.order, writer=writer):
                raise UploadError(f"the claim on {scene} region {region!r} expired while {dest.uri} was uploaded; retrying")
        except BaseException:
            self.records.release(scene, region, writer=writer)
            raise
        return record

    def _stac_item(self, record: VerificationRecord, cog: Any, dest: Destination) -> Any:
        """The STAC Item beside the COG: the asset href is relative (``./name.tif``, a slug: nothing to
        encode), the source link percent-encoded where the key needs it (a valid IRI reference); a mosaic
        links each of its sources (``derived_from``, priority order)."""
        if not self.write_stac:
            return None
        from sceneclip.core.rioenv import reuse_environ_sessions
        from sceneclip.core.stac import make_item

        reuse_environ_sessions()  # the footprint's rasterio.features calls: no boto3 Session each (see rioenv)
        sources = [href_for(f"s3://{s['bucket']}/{s['key']}") for s in record.sources or ()]
        return make_item(record, cog_href="./" + href_for(posixpath.basename(dest.key)),
                         source_href=sources or href_for(record.source), cog_path=cog.name)
