"""S3 target through boto3, path-style (works with AWS, MinIO, Ceph RGW, rclone)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

from .base import Target, TargetError, check_name

_MESSAGES = {
    "SignatureDoesNotMatch": "the S3 endpoint refused the secret key (signature does not match)",
    "InvalidAccessKeyId": "the S3 endpoint does not know this access key",
    "AccessDenied": "the S3 endpoint denied access with these credentials",
    "NoSuchBucket": "bucket {bucket!r} does not exist on the endpoint",
    "InvalidBucketName": "the endpoint refuses the bucket name {bucket!r}",
}


class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of bytes, for boto3's streaming upload."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._iter = iter(chunks)
        self._pending = b""
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            piece = next(self._iter, None)
            if piece is None:
                return 0
            self._pending = piece
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self.count += size
        return size


class S3Target(Target):
    def __init__(
        self,
        *,
        endpoint_url: str,
        region: str,
        bucket: str,
        prefix: str,
        access_key: str,
        secret_key: str,
        server_side_encryption: bool = False,
        timeout: float = 30,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.sse = server_side_encryption
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 2},
            ),
        )

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc: Exception, what: str) -> TargetError:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            template = _MESSAGES.get(code)
            if template:
                return TargetError(template.format(bucket=self.bucket))
            if code in ("404", "NoSuchKey"):
                return TargetError(f"{what}: the object does not exist")
            return TargetError(f"{what}: the S3 endpoint answered {code or 'an error'}")
        if isinstance(exc, BotoCoreError):
            return TargetError(f"{what}: {exc}")
        return TargetError(f"{what}: {exc}")

    def put(self, name: str, chunks: Iterable[bytes]) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        reader = _IterReader(chunks)
        extra = {"ServerSideEncryption": "AES256"} if self.sse else {}
        try:
            self.client.upload_fileobj(
                io.BufferedReader(reader), self.bucket, self._key(name), ExtraArgs=extra
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"writing {name}") from exc
        except Exception as exc:
            # boto3's transfer manager wraps client errors in its own exception types.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (BotoCoreError, ClientError)):
                raise self._error(cause, f"writing {name}") from exc
            raise self._error(exc, f"writing {name}") from exc
        return reader.count

    def get(self, name: str) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"reading {name}") from exc
        try:
            yield from body.iter_chunks(1024 * 1024)
        finally:
            body.close()

    def list(self, prefix: str = "") -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        base = self._key(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        names: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    names.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "listing") from exc
        return sorted(names)

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"deleting {name}") from exc

    def close(self) -> None:
        self.client.close()
