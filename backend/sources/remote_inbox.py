"""An S3 prefix as inbox (INBOX_URI): ready exports are pulled into the local inbox, imported there, then settled.

Azure Cost Management writes an export run as a folder of part files with `manifest.json` written last,
and teams sync those folders (or drop single files) into a bucket. The remote inbox mirrors the local one:

- `pull` copies every ready entry under the prefix into the local inbox (a file, or a folder once its
  manifest is there), under a hidden name first so a scan never sees half a download, and notes where
  it came from in `.remote.json`. The local scan then imports it exactly as a dropped file: the same
  checks, the same load report, the same "moves only once bronze holds its rows".
- `settle` follows the local outcome on the bucket: an imported entry's objects move to
  `<prefix>/processed/`, a refused one's to `<prefix>/rejected/` next to `<name>.error.txt`. A failed
  delivery (Kafka down) leaves both copies where they are for the next run.
- Crash safety: an outcome is written to the ledger before the bucket is touched, and the next pull
  settles what a crash left half done. If the process dies between bronze's commit and the ledger
  write, the entry is pulled again and the file cursors (content sha256) set it aside as "imported
  before": never imported twice, never lost.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from backend.config import Settings
from backend.sources import manifest

log = logging.getLogger(__name__)

LEDGER = ".remote.json"
SETTLED = ("processed", "rejected")
_PARTIAL = (".part", ".tmp", ".crdownload")


class RemoteInboxError(RuntimeError):
    """The bucket could not be read or written; the message names the setting to check."""


@dataclass(frozen=True)
class PullReport:
    pulled: list[str]  # entries copied into the local inbox by this pull
    settled: list[str]  # entries a previous run had imported or refused, moved on the bucket now
    waiting: list[str]  # folders without their manifest yet (Cost Management is still writing them)


def _client(settings: Settings):
    from minio import Minio

    endpoint = urlsplit(settings.s3_endpoint_url or "https://s3.amazonaws.com")
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    return Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key_id or None,
        secret_key=secret or None,
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
    )


class RemoteInbox:
    """The bucket side of the inbox named by INBOX_URI; the local side is settings.inbox_dir."""

    def __init__(self, settings: Settings) -> None:
        parts = urlsplit(settings.inbox_uri)
        self.uri = settings.inbox_uri
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.local = settings.inbox_dir
        self._s3 = _client(settings)

    # --- keys -------------------------------------------------------------------------------------
    def _key(self, *names: str) -> str:
        return "/".join(p for p in (self.prefix, *names) if p)

    def _name(self, key: str) -> str:
        """The entry name of a key directly under the prefix ("a.csv", or "run1/" for a folder)."""
        return key[len(self.prefix) + 1 :] if self.prefix else key

    # --- ledger: local entry name -> {"key": remote entry, "outcome": None | processed | rejected} ------
    def _ledger(self) -> dict[str, dict]:
        path = self.local / LEDGER
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _save(self, ledger: dict[str, dict]) -> None:
        path = self.local / LEDGER
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(ledger, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    # --- pull -------------------------------------------------------------------------------------
    def pull(self) -> PullReport:
        """Settle what earlier runs left, then copy every ready entry not pulled before into the local inbox."""
        self.local.mkdir(parents=True, exist_ok=True)
        try:
            settled = self._settle_pending()
            ledger = self._ledger()
            known = {entry["key"] for entry in ledger.values()}
            pulled, waiting = [], []
            for obj in self._s3.list_objects(self.bucket, prefix=self._key() + "/" if self.prefix else None):
                name = self._name(obj.object_name)
                top = name.rstrip("/")
                if not top or top.startswith(".") or top in SETTLED or top.lower().endswith(_PARTIAL):
                    continue
                if top.endswith(".error.txt") or obj.object_name in known:
                    continue
                if obj.is_dir and not self._has_manifest(obj.object_name):
                    waiting.append(top)
                    continue
                local_name = self._local_name(top, ledger)
                self._download(obj.object_name, local_name, is_dir=obj.is_dir)
                ledger[local_name] = {"key": obj.object_name, "outcome": None}
                self._save(ledger)  # one entry at a time: a crash mid-pull re-pulls only the unfinished one
                pulled.append(local_name)
        except RemoteInboxError:
            raise
        except Exception as exc:
            raise RemoteInboxError(
                f"the S3 inbox {self.uri} could not be read: {type(exc).__name__}: {exc}. "
                "Check INBOX_URI and the S3_* settings (endpoint, keys, region)"
            ) from exc
        if pulled:
            log.info("remote inbox: pulled %s from %s", ", ".join(pulled), self.uri)
        if waiting:
            log.info("remote inbox: waiting for the manifest of %s", ", ".join(waiting))
        return PullReport(pulled=pulled, settled=settled, waiting=waiting)

    def _has_manifest(self, folder_key: str) -> bool:
        return any(
            o.object_name.rsplit("/", 1)[-1] == manifest.MANIFEST
            for o in self._s3.list_objects(self.bucket, prefix=folder_key, recursive=True)
        )

    def _local_name(self, name: str, ledger: dict[str, dict]) -> str:
        """The remote name, unless a file dropped locally (or an earlier pull) already uses it."""
        candidate, n = name, 1
        while (self.local / candidate).exists() or candidate in ledger:
            stem, dot, ext = name.partition(".")
            candidate = f"{stem}-s3-{n}{dot}{ext}"
            n += 1
        return candidate

    def _download(self, key: str, local_name: str, *, is_dir: bool) -> None:
        hidden = self.local / f".{local_name}.pulling"
        if is_dir:
            for obj in self._s3.list_objects(self.bucket, prefix=key, recursive=True):
                if obj.is_dir:
                    continue
                target = hidden / obj.object_name[len(key) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                self._s3.fget_object(self.bucket, obj.object_name, str(target))
        else:
            self._s3.fget_object(self.bucket, key, str(hidden))
        os.replace(hidden, self.local / local_name)  # the scan skips hidden names: it sees whole entries only

    # --- settle -----------------------------------------------------------------------------------
    def settle(self, local_name: str, outcome: str, reason: str = "") -> None:
        """Record the local outcome of a pulled entry, then move its objects on the bucket to match."""
        ledger = self._ledger()
        entry = ledger.get(local_name)
        if entry is None:
            return  # dropped locally, not pulled: nothing on the bucket to move
        entry["outcome"], entry["reason"] = outcome, reason
        self._save(ledger)
        try:
            self._move(entry, outcome)
        except Exception:  # the next pull retries it; the import itself is done
            log.exception("remote inbox: %s is %s but could not be moved on %s", local_name, outcome, self.uri)
            return
        del ledger[local_name]
        self._save(ledger)

    def _settle_pending(self) -> list[str]:
        ledger = self._ledger()
        done = []
        for local_name, entry in list(ledger.items()):
            if entry.get("outcome") is None and not (self.local / local_name).exists():
                # The scan moved it but the process stopped before the ledger heard: its folder says how.
                found = [o for o in SETTLED if (self.local / o / local_name).exists()]
                if not found:
                    del ledger[local_name]  # gone locally: pulled again, and the cursors catch a repeat
                    continue
                entry["outcome"] = found[0]
            if entry.get("outcome") in SETTLED:
                self._move(entry, entry["outcome"])
                del ledger[local_name]
                done.append(local_name)
        if done:
            self._save(ledger)
        return done

    def _move(self, entry: dict, outcome: str) -> None:
        from minio.commonconfig import CopySource

        key = entry["key"]
        name = self._name(key).rstrip("/")
        objects = (
            [o.object_name for o in self._s3.list_objects(self.bucket, prefix=key, recursive=True)]
            if key.endswith("/")
            else [key]
        )
        for source in objects:
            target = self._key(outcome, self._name(source))
            if source == key and not key.endswith("/"):
                target = self._key(outcome, name)
            self._s3.copy_object(self.bucket, target, CopySource(self.bucket, source))
            self._s3.remove_object(self.bucket, source)
        if outcome == "rejected" and entry.get("reason"):
            import io

            data = (entry["reason"] + "\n").encode("utf-8")
            self._s3.put_object(self.bucket, self._key("rejected", f"{name}.error.txt"), io.BytesIO(data), len(data))
        log.info("remote inbox: %s -> %s/", name, self._key(outcome))


def remote_inbox(settings: Settings) -> RemoteInbox | None:
    """The configured remote inbox, or None when INBOX_URI is empty (the local inbox only)."""
    return RemoteInbox(settings) if settings.inbox_uri else None
