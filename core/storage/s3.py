"""``s3`` checkpoint storage: an S3 bucket, or any S3-compatible endpoint.

Layout: ``s3://<bucket>/[<prefix>/]<storage_id>/<relpath>``, one object per file.

boto3 is imported when an ``S3Storage`` is built, never at import time, so listing plugins
or importing ``detlite.storage`` works without it; building one without boto3 raises
FrameworkUnavailable with ``pip install 'detlite[s3]'``.

Guarantees:

- ``upload`` streams each file in parts of ``part_size`` bytes (multipart above one part),
  hashing exactly the bytes it sends, so the sha256 recorded is that of the stored object.
  ``metadata.json`` goes last: a checkpoint whose metadata.json is stored has every other
  file stored too. S3 has no rename, so a crashed upload can leave some objects behind;
  a failed one removes what it wrote, and ``delete`` removes any leftovers, unfinished
  multipart uploads included. The master's record, written after ``upload`` returns, is
  what says a checkpoint exists.
- ``download`` lists the prefix (paginated), streams every object into a hidden staging
  directory while hashing it, checks ``files`` (the master's records) if given, and only
  then renames the result into place (``metadata.json`` last when ``dest`` is an existing
  empty directory): ``dest`` gets all of a verified checkpoint or nothing.
- botocore failures become typed errors naming the bucket and endpoint (see
  ``detlite.storage.errors``), never raw botocore tracebacks.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ClassVar

from detlite.checkpoint import METADATA_FILE
from detlite.config.storage import S3StorageConfig
from detlite.errors import CheckpointError, CheckpointNotFound, DetliteError, FrameworkUnavailable
from detlite.interfaces import FileRecord, StorageBackend
from detlite.storage._files import (
    check_relpath,
    check_storage_id,
    compare_records,
    copy_stream,
    iter_files,
    prepare_dest,
    staged_dir,
    verify_directory,
    write_file,
)
from detlite.storage._s3_errors import s3_error
from detlite.storage.errors import StorageError

__all__ = ["INSTALL", "PART_SIZE", "S3Storage"]

INSTALL = "pip install 'detlite[s3]'"
#: Bytes per request. S3 needs parts of at least 5 MiB (but the last); 8 MiB is boto3's choice.
PART_SIZE = 8 * 1024 * 1024
_MIN_PART_SIZE = 5 * 1024 * 1024
# CompletedPart accepts these back from UploadPart; newer botocore adds a CRC by default and
# S3 then refuses to complete an upload whose parts do not repeat it.
_PART_CHECKSUMS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


@functools.lru_cache(maxsize=1)
def _shared_loader() -> Any:
    from botocore.loaders import create_loader

    return create_loader()


class S3Storage(StorageBackend):
    """Checkpoints as objects under ``s3://<bucket>/[<prefix>/]<storage_id>/``."""

    type: ClassVar[str] = "s3"
    #: Keys per listing request; S3's maximum. Tests lower it to exercise pagination.
    page_size: int = 1000

    def __init__(self, config: S3StorageConfig, *, part_size: int = PART_SIZE) -> None:
        try:
            import boto3  # noqa: F401 - the distribution users install; it brings botocore
            import botocore.session
            from botocore.config import Config
        except ImportError as exc:
            raise FrameworkUnavailable("s3", ["boto3"], INSTALL) from exc
        if part_size < _MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {_MIN_PART_SIZE} bytes (S3's minimum)")
        self.config = config
        self.bucket = config.bucket
        self.prefix = (config.prefix or "").strip("/")
        self.part_size = part_size
        # A session per storage: a shared one is not thread-safe to build clients from. The
        # loader is shared, because parsing S3's service model costs ~70 ms per client.
        session = botocore.session.Session()
        session.register_component("data_loader", _shared_loader())
        client_config = Config(
            connect_timeout=10, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
        )
        try:
            self.client: Any = session.create_client(
                "s3",
                endpoint_url=config.endpoint_url,
                aws_access_key_id=config.access_key,
                aws_secret_access_key=config.secret_key,
                config=client_config,
            )
        except ValueError as exc:  # botocore's InvalidEndpoint and bad region names
            raise StorageError(
                f"cannot use S3 endpoint {config.endpoint_url!r} for bucket {self.bucket!r}: "
                f"{exc}; fix checkpoint_storage.endpoint_url",
                bucket=self.bucket,
                endpoint=config.endpoint_url,
            ) from exc
        except Exception as exc:  # an access_key without a secret_key, and the like
            endpoint = config.endpoint_url or "the default AWS endpoint"
            typed = s3_error(exc, bucket=self.bucket, endpoint=endpoint, action="connect")
            if typed is None:
                raise
            raise typed from exc
        self.endpoint: str = self.client.meta.endpoint_url

    def __repr__(self) -> str:
        prefix = f"/{self.prefix}" if self.prefix else ""
        return f"S3Storage('s3://{self.bucket}{prefix}/', endpoint={self.endpoint!r})"

    # -- keys and errors -------------------------------------------------------------------

    def base_key(self, storage_id: str) -> str:
        """``[<prefix>/]<storage_id>``: every object of the checkpoint is under it plus '/'.

        ``storage_id`` must be a checkpoint uuid in canonical form (ValueError otherwise), so
        that no id names another's prefix or the TensorBoard folder."""
        storage_id = check_storage_id(storage_id)
        return f"{self.prefix}/{storage_id}" if self.prefix else storage_id

    def key_for(self, storage_id: str, relpath: str) -> str:
        """The key of one file of a checkpoint; CorruptCheckpoint for a relpath that is not
        strictly inside it (``..``, absolute, empty components)."""
        base = self.base_key(storage_id)
        return f"{base}/{check_relpath(relpath, self._where(storage_id))}"

    def _where(self, storage_id: str) -> str:
        return f"s3://{self.bucket}/{self.base_key(storage_id)}/ at {self.endpoint}"

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except DetliteError:
            raise
        except Exception as exc:
            typed = s3_error(exc, bucket=self.bucket, endpoint=self.endpoint, action=action)
            if typed is None:
                raise
            raise typed from exc

    def _objects(self, storage_id: str) -> Iterator[tuple[str, str, int]]:
        """``(relpath, key, size)`` of every object of the checkpoint, paginated."""
        base = self.base_key(storage_id) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=base, PaginationConfig={"PageSize": self.page_size}
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key: str = obj["Key"]
                if key.endswith("/"):
                    continue  # a "directory" marker some tools write; it holds no data
                relpath = check_relpath(key[len(base) :], self._where(storage_id))
                yield relpath, key, int(obj["Size"])

    # -- StorageBackend --------------------------------------------------------------------

    def upload(self, src: Path, storage_id: str) -> dict[str, FileRecord]:
        src = Path(src)
        base = self.base_key(storage_id)
        if not src.is_dir():
            raise CheckpointNotFound(f"cannot upload {src}: not a directory")
        # Walk first: a directory symlink is refused before anything is sent.
        files = sorted(iter_files(src), key=lambda item: item[0] == METADATA_FILE)
        with self._errors("upload"):
            if self._exists(storage_id):
                raise CheckpointError(
                    f"checkpoint {storage_id!r} is already stored at {self._where(storage_id)}; "
                    "stored checkpoints are immutable: delete it first or use a new id"
                )
            records: dict[str, FileRecord] = {}
            try:
                for relpath, path in files:
                    records[relpath] = self._put_file(path, f"{base}/{relpath}")
            except Exception:
                # Leave no partial checkpoint that exists() would report; a retry can reuse
                # the id. Best effort: the original error matters more than this one.
                with suppress(Exception):
                    self.delete(storage_id)
                raise
        return records

    def _put_file(self, path: Path, key: str) -> FileRecord:
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as fh:

            def chunks() -> Iterator[bytes]:
                nonlocal size
                while chunk := fh.read(self.part_size):
                    digest.update(chunk)
                    size += len(chunk)
                    yield chunk

            parts = chunks()
            first = next(parts, b"")
            second = next(parts, None)
            if second is None:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=first)
            else:
                self._put_multipart(key, itertools.chain((first, second), parts))
        return FileRecord(size=size, sha256=digest.hexdigest())

    def _put_multipart(self, key: str, chunks: Iterator[bytes]) -> None:
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            for number, chunk in enumerate(chunks, start=1):
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )
                part = {"PartNumber": number, "ETag": answer["ETag"]}
                part.update({k: answer[k] for k in _PART_CHECKSUMS if k in answer})
                done.append(part)
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            # Unfinished parts are invisible but billed; abort them on the way out.
            with suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def download(
        self,
        storage_id: str,
        dest: Path,
        *,
        files: Mapping[str, FileRecord] | None = None,
    ) -> None:
        """Fetch the checkpoint into ``dest`` (missing, or an empty directory).

        With ``files`` (the master's records) every recorded file is checked, and a
        mismatch raises CorruptCheckpointFile before anything appears at ``dest``. A
        ``dest`` that already holds this checkpoint's ``metadata.json`` is left as it is
        (and checked against ``files`` if given).
        """
        dest = Path(dest)
        where = self._where(storage_id)
        with self._errors("download"):
            objects = list(self._objects(storage_id))
            if not objects:
                raise CheckpointNotFound(f"no checkpoint {storage_id!r} at {where}")

            def stored_metadata() -> bytes | None:
                key = next((k for rel, k, _ in objects if rel == METADATA_FILE), None)
                if key is None:
                    return None
                data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                return data

            if prepare_dest(dest, stored_metadata, where):
                if files is not None:
                    verify_directory(dest, files)
                return
            actual: dict[str, FileRecord] = {}
            with staged_dir(dest) as partial:
                for relpath, key, _ in objects:
                    body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                    try:
                        target = partial.joinpath(*relpath.split("/"))
                        actual[relpath] = write_file(target, body)
                    finally:
                        body.close()
                if files is not None:
                    compare_records(files, actual, where)

    def delete(self, storage_id: str, files: Iterable[str] | None = None) -> None:
        """Delete every object under the checkpoint's prefix (``files`` is accepted for the
        same call as shared_fs, and not needed: a prefix holds nothing but its objects) and
        abort its unfinished multipart uploads."""
        del files
        base = self.base_key(storage_id) + "/"
        with self._errors("delete"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, PaginationConfig={"PageSize": self.page_size}
            )
            for page in pages:
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                # DeleteObjects takes at most 1000 keys; a listing page holds at most 1000.
                for start in range(0, len(keys), 1000):
                    batch = keys[start : start + 1000]
                    answer = self.client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                    if answer.get("Errors"):
                        first = answer["Errors"][0]
                        raise StorageError(
                            f"S3 did not delete {len(answer['Errors'])} object(s) of "
                            f"{self._where(storage_id)}, first {first.get('Key')!r}: "
                            f"{first.get('Code')}: {first.get('Message')}",
                            bucket=self.bucket,
                            endpoint=self.endpoint,
                        )
            uploads = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=base, PaginationConfig={"PageSize": self.page_size}
            )
            for page in uploads:
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

    def exists(self, storage_id: str) -> bool:
        with self._errors("exists"):
            return self._exists(storage_id)

    def _exists(self, storage_id: str) -> bool:
        base = self.base_key(storage_id) + "/"
        answer = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, MaxKeys=1)
        return int(answer.get("KeyCount", 0)) > 0

    # -- beyond the interface --------------------------------------------------------------

    def verify(self, storage_id: str, files: Mapping[str, FileRecord]) -> None:
        """Check the stored objects against ``files`` by streaming and hashing them (nothing
        is written); CorruptCheckpointFile names the first that is missing or differs."""
        where = self._where(storage_id)
        with self._errors("verify"):
            stored = {rel: (key, size) for rel, key, size in self._objects(storage_id)}
            if not stored:
                raise CheckpointNotFound(f"no checkpoint {storage_id!r} at {where}")
            actual: dict[str, FileRecord] = {}
            for relpath in sorted(files):
                if relpath not in stored:
                    break  # compare_records reports it; no need to read further
                key, size = stored[relpath]
                if size != files[relpath].size:
                    actual[relpath] = FileRecord(size=size, sha256="")
                    break
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
                try:
                    actual[relpath] = copy_stream(body, None)
                finally:
                    body.close()
                if actual[relpath] != files[relpath]:
                    break
            compare_records(files, actual, where)

    def check(self) -> None:
        """Raise the typed error if the bucket is missing or refuses these credentials."""
        with self._errors("check"):
            self.client.head_bucket(Bucket=self.bucket)
