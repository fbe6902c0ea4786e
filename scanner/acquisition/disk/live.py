"""A running QEMU guest's disk, scanned consistently: freeze with an external snapshot, merge back.

Sequence (all through the appliance's own QMP socket):

1. ``query-block`` finds the disk (``device`` = drive id, qdev id or node name), its image file,
   format and node name;
2. ``blockdev-snapshot-sync`` puts a new qcow2 overlay on top (beside the image): from then on the
   guest writes to the overlay and the image below is frozen, opened read-only by QEMU;
3. the scanner reads the frozen image like any image file;
4. :meth:`LiveDisk.release`: ``block-commit`` (active commit of the overlay into that image,
   ``base-node`` pinned so a deeper backing chain is untouched), wait for ``BLOCK_JOB_READY``,
   ``job-complete`` (pivot back to the image), wait for ``BLOCK_JOB_COMPLETED``, delete the overlay.

The guest keeps running throughout; it sees every write it made. If the merge fails the overlay
is *kept* (deleting it would lose guest writes) and ``details()`` says so.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scanner.acquisition.qmp import QmpClient, QmpError
from scanner.errors import SourceError

COMMIT_TIMEOUT = 600.0


@dataclass(frozen=True)
class FrozenImage:
    path: Path
    format: str


class LiveDisk:
    def __init__(self, qmp: Path, device: str) -> None:
        self.device = device
        self.client = QmpClient(qmp)
        self.overlay: Path | None = None
        self.overlay_node = ""
        self.base_node = ""
        self.state = "not frozen"
        try:
            self.client.connect()
        except QmpError as e:
            raise SourceError(str(qmp), f"cannot reach QEMU: {e.message}") from e

    def freeze(self) -> FrozenImage:
        """Snapshot the disk; returns the frozen image to read."""
        inserted = self._find()
        image = inserted.get("image", {})
        filename = str(image.get("filename") or inserted.get("file") or "")
        fmt = str(image.get("format") or inserted.get("drv") or "raw")
        self.base_node = str(inserted.get("node-name") or "")
        if not filename or not Path(filename).is_file():
            raise SourceError(self.device, f"the disk's image {filename!r} is not a local file")
        token = uuid.uuid4().hex[:12]
        self.overlay = Path(filename).with_name(f"{Path(filename).name}.avscan-{token}.qcow2")
        self.overlay_node = f"avscan-{token}"
        try:
            self.client.execute(
                "blockdev-snapshot-sync",
                {
                    **({"node-name": self.base_node} if self.base_node else {"device": self.device}),
                    "snapshot-file": str(self.overlay),
                    "snapshot-node-name": self.overlay_node,
                    "format": "qcow2",
                    "mode": "absolute-paths",
                },
            )
        except QmpError as e:
            self.overlay.unlink(missing_ok=True)
            self.overlay = None
            raise SourceError(self.device, f"external snapshot failed: {e.message}") from e
        self.state = "frozen"
        return FrozenImage(Path(filename), fmt)

    def release(self) -> None:
        """Merge the overlay back and delete it; idempotent; never raises (see ``details``)."""
        if self.state == "frozen":
            try:
                self._commit()
                self.state = "merged"
                if self.overlay is not None:
                    self.overlay.unlink(missing_ok=True)
            except QmpError as e:
                self.state = f"merge failed, overlay kept at {self.overlay}: {e.message}"
        with contextlib.suppress(Exception):
            self.client.close()

    def details(self) -> dict[str, str]:
        return {"disk.live": self.state, "disk.device": self.device}

    def _commit(self) -> None:
        job = f"{self.overlay_node}-commit"
        args: dict[str, Any] = {"job-id": job, "device": self.overlay_node}
        if self.base_node:
            args["base-node"] = self.base_node
        self.client.execute("block-commit", args)
        self._wait_job(job, "BLOCK_JOB_READY")
        self.client.execute("job-complete", {"id": job})
        event = self._wait_job(job, "BLOCK_JOB_COMPLETED")
        if event.get("data", {}).get("error"):
            raise QmpError("block-commit", str(event["data"]["error"]))

    def _wait_job(self, job: str, name: str) -> dict[str, Any]:
        while True:
            event = self.client.wait_event(name, COMMIT_TIMEOUT)
            if event.get("data", {}).get("device") == job:
                return event

    def _find(self) -> dict[str, Any]:
        try:
            blocks = self.client.execute("query-block")
        except QmpError as e:
            raise SourceError(self.device, f"query-block failed: {e.message}") from e
        for block in blocks or []:
            inserted = block.get("inserted")
            if not inserted:
                continue
            names = {block.get("device"), block.get("qdev"), inserted.get("node-name")}
            qdev = str(block.get("qdev") or "")
            if self.device in names or qdev.startswith(f"/machine/peripheral/{self.device}/"):
                return dict(inserted)
        raise SourceError(self.device, "no such disk in the guest (query-block)")
