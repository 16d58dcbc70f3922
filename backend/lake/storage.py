"""Where the lake lives (local folder or S3/MinIO), its delta-rs storage options, and bucket management via minio."""

from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from backend.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LakeLocation:
    """A resolved lake root. `uri` is a local absolute path or s3://bucket/prefix (no trailing slash)."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict, repr=False)
    endpoint_url: str = ""
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    region: str = "us-east-1"

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    @property
    def bucket(self) -> str:
        return urlsplit(self.uri).netloc if self.is_s3 else ""

    @property
    def prefix(self) -> str:
        return urlsplit(self.uri).path.strip("/") if self.is_s3 else ""

    def join(self, *parts: str) -> str:
        tail = "/".join(p.strip("/") for p in parts if p)
        return f"{self.uri.rstrip('/')}/{tail}" if tail else self.uri

    def display(self) -> str:
        return f"{self.uri} (endpoint {self.endpoint_url})" if self.is_s3 and self.endpoint_url else self.uri


def lake_location(settings: Settings) -> LakeLocation:
    """Resolve LAKE_URI: empty means `<data_dir>/lake`; s3:// uses the S3_* settings for delta-rs and minio."""
    uri = settings.lake_uri
    if not uri:
        return LakeLocation(uri=str(settings.data_dir / "lake"))
    if uri.startswith("file://"):
        return LakeLocation(uri=str(Path(uri[len("file://") :]).resolve()))
    if not uri.startswith("s3://"):
        return LakeLocation(uri=str(Path(uri).expanduser().resolve()))
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else ""
    options = {"AWS_REGION": settings.s3_region}
    if settings.s3_access_key_id:
        options["AWS_ACCESS_KEY_ID"] = settings.s3_access_key_id
        options["AWS_SECRET_ACCESS_KEY"] = secret
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        options["AWS_ALLOW_HTTP"] = "true" if settings.s3_endpoint_url.startswith("http://") else "false"
        # MinIO serves buckets by path, not by virtual host.
        options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "false"
    # Costlake has a single writer per table (the pipeline holds a Postgres advisory lock), so the
    # rename-based commit without an external lock service is safe here.
    options["AWS_S3_ALLOW_UNSAFE_RENAME"] = "true"
    return LakeLocation(
        uri=uri.rstrip("/"),
        storage_options=options,
        endpoint_url=settings.s3_endpoint_url,
        access_key=settings.s3_access_key_id,
        secret_key=secret,
        region=settings.s3_region,
    )


def minio_client(location: LakeLocation):
    """A minio SDK client for bucket management (delta-rs does the table I/O itself)."""
    from minio import Minio

    endpoint = urlsplit(location.endpoint_url or "https://s3.amazonaws.com")
    return Minio(
        endpoint.netloc,
        access_key=location.access_key or None,
        secret_key=location.secret_key or None,
        secure=endpoint.scheme == "https",
        region=location.region,
    )


def ensure_lake(location: LakeLocation) -> None:
    """Create the local folder or the bucket when missing."""
    if not location.is_s3:
        Path(location.uri).mkdir(parents=True, exist_ok=True)
        return
    client = minio_client(location)
    if not client.bucket_exists(location.bucket):
        client.make_bucket(location.bucket)
        log.info("created bucket %s", location.bucket)


def check_lake(location: LakeLocation) -> str:
    """Write, read back and delete a marker object; returns a short description or raises."""
    marker = f".costlake-health-{uuid.uuid4().hex}"
    if not location.is_s3:
        root = Path(location.uri)
        root.mkdir(parents=True, exist_ok=True)
        path = root / marker
        path.write_bytes(b"ok")
        ok = path.read_bytes() == b"ok"
        path.unlink()
        if not ok:
            raise OSError(f"lake folder {root} did not return what was written")
        return f"local folder {root}"
    client = minio_client(location)
    key = f"{location.prefix}/{marker}" if location.prefix else marker
    client.put_object(location.bucket, key, io.BytesIO(b"ok"), 2)
    try:
        body = client.get_object(location.bucket, key)
        try:
            ok = body.read() == b"ok"
        finally:
            body.close()
            body.release_conn()
    finally:
        client.remove_object(location.bucket, key)
    if not ok:
        raise OSError(f"bucket {location.bucket} did not return what was written")
    return f"bucket {location.bucket} at {location.endpoint_url or 'AWS S3'}"
