"""An object store for checkpoints and adapters: write-once keys, content-addressed blobs.

Two drivers behind one small interface (in the manner of Tessera's storage drivers):

- `LocalObjects`: a directory. A write goes to a uniquely named temporary file (O_EXCL), is
  fsynced, then hard-linked to its key — `link` fails when the key exists, so a key is written
  at most once and a reader never sees half an object.
- `S3Objects`: an S3-compatible server (boto3, imported only when used: the auditor's base
  install has no boto3). A write is `PutObject` with `If-None-Match: *`; 412 means present.

`open_object_store(url)` takes `s3://BUCKET[/PREFIX][?endpoint=URL][&credentials=FILE][&profile=NAME]
[&region=NAME]`, or a directory (a path or `file://PATH`). S3 credentials come from boto3's
default chain (AWS_ACCESS_KEY_ID..., ~/.aws/credentials, an instance role) unless the URL names
an AWS-style shared credentials file (`credentials=`; profile `erasure` unless `profile=`) — as
the URL `erasure dev up --shared` records does, so the secret lives only in that 0600 file.

Blobs are keyed by their SHA-256 (`blobs/sha256/<hex>`) and verified on every read: a blob
whose bytes do not hash to its key is CorruptState, never returned. Failures are one line:
the server down or refusing the credentials is ServiceError, a missing object ObjectMissing.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ledger.errors import BadInput, CorruptState, ServiceError

BLOBS = "blobs/sha256/"
_HEX = re.compile(r"[0-9a-f]{64}")
_KEY = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
DEFAULT_PROFILE = "erasure"


class ObjectMissing(BadInput):
    """The key holds no object."""


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or any(part in (".", "..") for part in key.split("/")):
        raise BadInput(f"invalid object key {key!r}: '/'-separated names of letters, digits, '.', '_', '-'")
    return key


class ObjectStore(ABC):
    """Write-once objects under '/'-separated keys."""

    url: str

    @abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Write `data` at `key` unless an object is there; False (and nothing written) if one is."""

    @abstractmethod
    def replace(self, key: str, data: bytes) -> None:
        """Write `data` at `key` whatever is there; readers see the old object or the new one, never
        a mix. Only a tiled log's `checkpoint` is rewritten: everything else is write-once."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object at `key`; ObjectMissing when there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """The keys that start with `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object at `key` (nothing if there is none): only erasure deletes."""

    def versioning(self) -> str:
        """The bucket's versioning status ("Enabled", "Suspended"), "" when it keeps no old versions."""
        return ""

    def put_blob(self, data: bytes, under: str = BLOBS) -> str:
        """Store `data` content-addressed under the prefix `under` (idempotent); its sha256 in hex."""
        digest = hashlib.sha256(data).hexdigest()
        self.put_if_absent(under + digest, data)
        return digest

    def get_blob(self, digest: str, under: str = BLOBS) -> bytes:
        """The blob `digest` names, after checking that its bytes hash to it (CorruptState if not)."""
        if not _HEX.fullmatch(digest):
            raise BadInput(f"invalid blob digest {digest!r}: 64 lowercase hex digits")
        try:
            data = self.get(under + digest)
        except ObjectMissing:
            raise ObjectMissing(f"blob {digest[:16]}... is missing from the object store {self.url}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CorruptState(f"blob {digest[:16]}... in the object store {self.url} is corrupt: its bytes hash "
                               f"to {actual[:16]}...")
        return data


class LocalObjects(ObjectStore):
    """Objects as files under a directory."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        tmp = _durable_temp(path, data)
        try:
            try:
                os.link(tmp, path)  # atomic, and never replaces: the first writer wins
            except FileExistsError:
                return False
        finally:
            os.unlink(tmp)
        return True

    def replace(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = _durable_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectMissing(f"no object {key} in {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # and the directories that held only it, as S3 has none
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone)
                break

    def list(self, prefix: str = "") -> list[str]:
        base = self.root / prefix.rpartition("/")[0]  # walk only the directory the prefix is in
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*")
                if p.is_file() and not p.name.startswith("."))
        return sorted(k for k in keys if k.startswith(prefix))


def _durable_temp(path: Path, data: bytes) -> str:
    """`data` fsynced in a new temporary file (O_EXCL) beside `path`; its name."""
    for attempt in (1, 2):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            break
        except FileNotFoundError:  # a delete removed the emptied directory meanwhile: make it again
            if attempt == 2:
                raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


@dataclass(frozen=True)
class S3Location:
    """What an `s3://` URL names."""

    bucket: str
    prefix: str  # "" or "a/b/" (keys are prefix + key)
    endpoint: str | None  # None: AWS's own endpoints
    credentials: Path | None  # an AWS-style shared credentials file
    profile: str
    region: str

    @classmethod
    def parse(cls, url: str) -> "S3Location":
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BadInput(f"invalid object store URL {url!r}: expected s3://BUCKET[/PREFIX][?endpoint=URL]")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "credentials", "profile", "region"}
        if unknown:
            raise BadInput(f"invalid object store URL {url!r}: unknown parameter {sorted(unknown)[0]!r}")
        prefix = unquote(parts.path).strip("/")
        if prefix:
            _check_key(prefix)
        return cls(bucket=parts.netloc, prefix=prefix + "/" if prefix else "", endpoint=query.get("endpoint"),
                   credentials=Path(query["credentials"]) if "credentials" in query else None,
                   profile=query.get("profile", DEFAULT_PROFILE), region=query.get("region", "us-east-1"))

    def read_credentials(self) -> tuple[str, str] | None:
        """(access key, secret) from the credentials file the URL names; None when it names none."""
        if self.credentials is None:
            return None
        config = configparser.ConfigParser(interpolation=None)
        try:
            with self.credentials.open(encoding="utf-8") as f:
                config.read_file(f)
        except OSError as err:
            raise ServiceError(f"cannot read the object store's credentials file {self.credentials}: "
                               f"{err.strerror}") from None
        except configparser.Error:
            raise ServiceError(f"the object store's credentials file {self.credentials} is not an AWS-style "
                               "credentials file") from None
        section = config[self.profile] if config.has_section(self.profile) else None
        if section is None or not section.get("aws_access_key_id") or not section.get("aws_secret_access_key"):
            raise ServiceError(f"the object store's credentials file {self.credentials} has no profile "
                               f"[{self.profile}] with aws_access_key_id and aws_secret_access_key")
        return section["aws_access_key_id"], section["aws_secret_access_key"]


_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
                    "403"}


class S3Objects(ObjectStore):
    """Objects in an S3 bucket (under a prefix)."""

    def __init__(self, url: str, connect_timeout_s: float = 5.0, read_timeout_s: float = 60.0, attempts: int = 3):
        self.url = url
        self.location = S3Location.parse(url)
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ServiceError("the S3 object store needs boto3: pip install 'erasure[full]'") from None
        keys = self.location.read_credentials()
        session = boto3.session.Session(
            **({"aws_access_key_id": keys[0], "aws_secret_access_key": keys[1]} if keys else {}),
            region_name=self.location.region)
        self._client = session.client(
            "s3", endpoint_url=self.location.endpoint,
            config=Config(connect_timeout=connect_timeout_s, read_timeout=read_timeout_s,
                          retries={"max_attempts": attempts, "mode": "standard"},
                          s3={"addressing_style": "path"} if self.location.endpoint else {},
                          # S3 servers other than AWS's reject the newer default checksum headers
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def _key(self, key: str) -> str:
        return self.location.prefix + _check_key(key)

    def _where(self) -> str:
        return f"s3://{self.location.bucket}" + (f" at {self.location.endpoint}" if self.location.endpoint else "")

    def _call(self, what: str, key: str | None, **kwargs):
        """Call the client, with botocore's failures turned into one-line errors."""
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError, HTTPClientError,
                                         NoCredentialsError, PartialCredentialsError)

        try:
            return getattr(self._client, what)(Bucket=self.location.bucket, **kwargs)
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "412") or status == 412:
                raise _Present() from None
            if code in ("NoSuchKey", "NoSuchBucket", "404") or status == 404:
                if key is None or code == "NoSuchBucket":
                    raise ServiceError(f"the object store {self._where()} has no bucket "
                                       f"{self.location.bucket!r}") from None
                raise ObjectMissing(f"no object {key} in {self.url}") from None
            if code in _BAD_CREDENTIALS or status == 403:
                raise ServiceError(f"the object store {self._where()} refused the credentials ({code}): check "
                                   + (f"{self.location.credentials}" if self.location.credentials
                                      else "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")) from None
            message = str(err.response.get("Error", {}).get("Message", "")).splitlines()[:1]
            raise ServiceError(f"the object store {self._where()} failed {what}: {code} {' '.join(message)}".rstrip()) \
                from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ServiceError(f"no credentials for the object store {self._where()}: set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, or name a credentials file (credentials=FILE in the URL)") \
                from None
        except (ConnectionError, HTTPClientError):
            raise ServiceError(f"the object store {self._where()} is not reachable; is the S3 server running?") \
                from None
        except BotoCoreError as err:
            raise ServiceError(f"the object store {self._where()} failed {what}: "
                               f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self._call("put_object", key, Key=self._key(key), Body=data, IfNoneMatch="*")
        except _Present:
            return False
        return True

    def replace(self, key: str, data: bytes) -> None:
        self._call("put_object", key, Key=self._key(key), Body=data)  # S3's PUT is atomic

    def get(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        body = self._call("get_object", key, Key=self._key(key))["Body"]
        try:
            return body.read()
        except (BotoCoreError, OSError):
            raise ServiceError(f"the object store {self._where()} broke off while sending {key}") from None

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", key, Key=self._key(key))
        except ObjectMissing:
            return False
        return True

    def delete(self, key: str) -> None:
        self._call("delete_object", key, Key=self._key(key))  # S3: deleting a missing key succeeds

    def list(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        token: dict = {}
        full = self.location.prefix + prefix
        while True:
            page = self._call("list_objects_v2", None, Prefix=full, **token)
            keys.extend(item["Key"][len(self.location.prefix):] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def versioning(self) -> str:
        return str(self._call("get_bucket_versioning", None).get("Status", ""))

    def ping(self) -> None:
        """Check that the bucket answers with these credentials (ServiceError if not)."""
        self._call("head_bucket", None)


class _Present(Exception):
    """A conditional write found the key taken (412)."""


def open_object_store(url: str) -> ObjectStore:
    """The driver for `url`: `s3://...` (S3Objects), else a directory (`file://PATH` or a path)."""
    if url.startswith("s3://"):
        return S3Objects(url)
    if url.startswith("file://"):
        return LocalObjects(Path(unquote(urlsplit(url).path)))
    if "://" in url:
        raise BadInput(f"unsupported object store URL {url!r}: s3://BUCKET[/PREFIX][?endpoint=URL], "
                       "file://PATH or a directory")
    return LocalObjects(Path(url))
