"""Which ``BlobStore`` a gateway runs on, from its settings: S3-compatible object storage when
``settings.s3.url`` is set, else the local directory ``settings.storage.blob_dir``. Constructs only;
the server's lifecycle opens and closes the store."""

from __future__ import annotations

from gateway.blobs import BlobStore
from gateway.settings import Settings


def make_blob_store(settings: Settings) -> BlobStore:
    if settings.s3.enabled:
        from gateway.blobs_s3 import S3BlobStore, lifecycle_days

        return S3BlobStore(
            settings.s3,
            max_log_bytes=settings.logs.max_log_bytes,
            lock_timeout=settings.logs.upload_lock_timeout,
            lifecycle_days=lifecycle_days(settings.retention.ttl_seconds, settings.s3.lifecycle_margin_days),
        )
    from gateway.blobs_local import LocalBlobStore

    return LocalBlobStore(
        settings.storage.blob_dir,
        fsync=settings.storage.fsync,
        max_log_bytes=settings.logs.max_log_bytes,
        lock_timeout=settings.logs.upload_lock_timeout,
    )


def describe_blob_store(settings: Settings) -> str:
    """Where logs live, for the startup log line (no credentials: the URL holds none)."""
    if settings.s3.enabled:
        return f"{settings.s3.url} at {settings.s3.endpoint_url or 'AWS ' + settings.s3.region}"
    return settings.storage.blob_dir
