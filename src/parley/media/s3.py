"""Blobs in an S3-compatible bucket (``PARLEY_MEDIA_URL=s3://bucket/prefix``).

An upload is spooled to the data directory while it arrives and hashed; then, unless an
object with that SHA-256 exists already, sent as a multipart upload of 5 MiB parts read
from the spool file (never the whole file in memory). An object that exists already is
copied onto itself, which moves its ``LastModified`` so the garbage collector's grace
period starts again. Downloads stream ``GetObject`` (with ``Range``) through Parley, so
the same authorization and headers apply as for the embedded store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from parley.errors import Unavailable
from parley.media.blobs import CHUNK, BlobInfo, BlobStore, Spool

PART = 5 * 1024 * 1024  # S3's smallest multipart part


def parse_media_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at the ends)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError("PARLEY_MEDIA_URL must look like s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3Blobs(BlobStore):
    name = "s3"

    def __init__(
        self, bucket: str, prefix: str, spool_dir: Path, endpoint: str | None = None
    ) -> None:
        super().__init__(spool_dir)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.requests = 0  # S3 calls made (for docs and tests)
        self._context: Any = None
        self._client: Any = None

    def key(self, sha256: str) -> str:
        return f"{self.prefix}/{sha256}" if self.prefix else sha256

    async def open(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        session = get_session()
        region = session.get_config_variable("region") or "us-east-1"
        config = AioConfig(
            connect_timeout=2.0,
            read_timeout=30.0,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if self.endpoint else None,
        )
        self._context = session.create_client(
            "s3", region_name=region, endpoint_url=self.endpoint, config=config
        )
        self._client = await self._context.__aenter__()
        if self.endpoint:  # a local endpoint (MinIO, moto, a test): make the bucket if missing
            await self._ensure_bucket()

    async def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            try:
                await self._client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise Unavailable(f"media bucket {self.bucket} unusable: {code}") from exc

    async def close(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            raise Unavailable("media store is not open")
        self.requests += 1
        try:
            return await getattr(self._client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError:
            raise
        except (TimeoutError, BotoCoreError, OSError) as exc:
            raise Unavailable("media store unavailable") from exc

    async def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await self._call("head_object", Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise Unavailable("media store unavailable") from exc
        return True

    async def keep(self, spool: Spool) -> bool:
        await asyncio.to_thread(spool.finish)
        key = self.key(spool.sha256)
        try:
            if await self._exists(key):
                await self._call(
                    "copy_object",
                    Key=key,
                    CopySource={"Bucket": self.bucket, "Key": key},
                    MetadataDirective="REPLACE",
                    ContentType="application/octet-stream",
                )
                return False
            if spool.size <= PART:
                data = await asyncio.to_thread(spool.path.read_bytes)
                await self._call("put_object", Key=key, Body=data)
            else:
                await self._multipart(key, spool.path)
            return True
        finally:
            await asyncio.to_thread(spool.discard)

    async def _multipart(self, key: str, path: Path) -> None:
        started = await self._call("create_multipart_upload", Key=key)
        upload_id = started["UploadId"]
        parts = []
        try:
            with path.open("rb") as handle:
                number = 1
                while data := await asyncio.to_thread(handle.read, PART):
                    done = await self._call(
                        "upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"ETag": done["ETag"], "PartNumber": number})
                    number += 1
                    del data
            await self._call(
                "complete_multipart_upload",
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            raise

    async def read(self, sha256: str, start: int, end: int) -> AsyncGenerator[bytes, None]:
        from botocore.exceptions import ClientError

        if end < start:  # an empty file
            return
        try:
            answer = await self._call(
                "get_object", Key=self.key(sha256), Range=f"bytes={start}-{end}"
            )
        except ClientError as exc:
            raise Unavailable("media store: the object cannot be read") from exc
        body = answer["Body"]
        try:
            while chunk := await body.read(CHUNK):
                yield chunk
        finally:
            body.close()

    async def blobs(self) -> AsyncIterator[BlobInfo]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = await self._call(
                "list_objects_v2", Prefix=f"{self.prefix}/" if self.prefix else "", **extra
            )
            for item in page.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                if len(name) == 64:
                    yield BlobInfo(name, int(item["Size"]), item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def delete(self, sha256: str, modified_before: float) -> bool:
        from botocore.exceptions import ClientError

        key = self.key(sha256)
        try:
            head = await self._call("head_object", Key=key)
        except ClientError:
            return False
        if head["LastModified"].timestamp() >= modified_before:
            return False
        await self._call("delete_object", Key=key)
        return True
