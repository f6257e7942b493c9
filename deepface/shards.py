"""The output directory of `deepface.tfrecords` while it is built: shards, resumable state, manifest.

- `ShardWriter` appends framed records (`deepface.records.frame_record`) to one shard under a
  temporary name of its run's own and, once complete, renames it to its pending name (``<split>-00003.tfrecord.done``,
  `shard_name` gives the final ``-of-N`` name).
- `Segment` counts a run of consecutive source files (`Item`): the records of one shard, or of the
  tail after the last shard, and the files skipped or ignored among them.
- `save_state` / `load_state` write and read ``STATE_FILE``: the settings, the complete shards and
  where in the source each ends, and the tail once the source is read. `load_state` keeps the
  shards the state vouches for (present, of the recorded size) and removes everything else a killed
  build left (its caller holds the output's lock, `deepface.outputs`: no live run writes there); it
  raises `DeepFaceError` when the directory holds a build with other settings, or final shards
  without a manifest.
- `finish_build` checks the skipped fraction, gives the shards their final names and writes the
  manifest (last), then removes the state; it raises `DeepFaceError` when no image was stored or
  more than ``max_bad_fraction`` of the images were skipped (the shards stay, for a rerun).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import secrets
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepface.archives import MAX_EXAMPLES
from deepface.contracts import MANIFEST_FILE, other_settings, write_manifest
from deepface.errors import DeepFaceError
from deepface.files import errors_name, read_json, remove_temporaries, write_json

logger = logging.getLogger(__name__)

STATE_FILE = ".build_state.json"
WRITE_BUFFER = 1 << 20  # bytes buffered by a shard's file between system calls
IGNORED = "ignored"  # Item.reason of a file whose name is not an image's


class Item(NamedTuple):
    """One file of the source on its way to a shard (main process).

    ``ordinal``: index among the source's files; ``name``: path inside the source; ``label``: class id
    (-1 when skipped); ``data``: the file's bytes, None when skipped; ``reason``: why it is skipped,
    ``IGNORED`` for a file that is not an image, else None; ``points``: its landmarks, None to detect.
    """

    ordinal: int
    name: str
    label: int
    data: bytes | None
    reason: str | None
    points: np.ndarray | None = None


def shard_name(split: str, index: int, num_shards: int) -> str:
    """Final name of a shard: ``train-00012-of-00256.tfrecord``."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _pending_name(split: str, index: int) -> str:
    """Name of a complete shard while the total is unknown (it does not match ``*.tfrecord``)."""
    return f"{split}-{index:05d}.tfrecord.done"


class ShardWriter:
    """Appends framed records (`deepface.records.frame_record`) to one shard under a temporary name of
    this run's own (``.<split>-00003.<pid>-<random>.tfrecord.done.tmp``: never another run's, and matched
    by `deepface.files.TEMPORARY_GLOB`); `finish` syncs it to disk and renames it to its pending name.
    ``bytes``: the shard's size so far."""

    def __init__(self, out: Path, split: str, index: int):
        self.path = out / _pending_name(split, index)
        run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._temporary = out / f".{split}-{index:05d}.{run}.tfrecord.done.tmp"
        self._file = open(self._temporary, "xb", buffering=WRITE_BUFFER)  # noqa: SIM115 (closed by finish/discard)
        self.bytes = 0

    def write(self, record: bytes) -> None:
        with errors_name(self.path):  # a full disk's ENOSPC names no file
            self._file.write(record)
        self.bytes += len(record)

    def finish(self) -> None:
        with errors_name(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.replace(self._temporary, self.path)

    def discard(self) -> None:
        """Close and delete the temporary; its own OSErrors (closing flushes again: ENOSPC) are not raised, so
        the error that made the build stop is the one reported."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._temporary.unlink(missing_ok=True)


@dataclasses.dataclass
class Segment:
    """A run of consecutive source files: the records of one shard and the files skipped among them.

    ``end`` is the index (in the source) just past the segment's last file; the segment after the last
    shard (the tail) has no shard ``file``.
    """

    file: str | None = None
    records: int = 0
    bytes: int = 0
    end: int = 0
    skipped: list = dataclasses.field(default_factory=list)  # [{"file": name, "reason": text}]
    ignored: int = 0
    ignored_examples: list = dataclasses.field(default_factory=list)
    several_faces: int = 0  # images where the detector found more than one face (the one meant is stored)
    several_faces_examples: list = dataclasses.field(default_factory=list)
    landmarks_unused: int = 0  # (tail only) landmark rows naming no image of the source
    landmarks_unused_examples: list = dataclasses.field(default_factory=list)

    def add(self, item: Item, faces: int | None = None) -> None:
        if faces is not None and faces > 1:
            self.several_faces += 1
            if len(self.several_faces_examples) < MAX_EXAMPLES:
                self.several_faces_examples.append(item.name)
        self.end = item.ordinal + 1
        if item.reason == IGNORED:
            self.ignored += 1
            if len(self.ignored_examples) < MAX_EXAMPLES:
                self.ignored_examples.append(item.name)
        elif item.reason is not None:
            self.skipped.append({"file": item.name, "reason": item.reason})
        else:
            self.records += 1


def load_state(out: Path, split: str, settings: dict) -> tuple[list[Segment], Segment | None]:
    """The complete shards of an unfinished build with these settings (under their pending names), and
    its tail if the source was read to the end. Removes temporaries and shards the state does not vouch for:
    call it holding the output's lock (`deepface.outputs.output_lock`), which makes them a dead run's.
    """
    state_path = out / STATE_FILE
    shards, tail = [], None
    if state_path.exists():
        state = read_json(state_path)
        if state["settings"] != settings:
            raise other_settings(out, "build", state["settings"], settings, finished=False)
        saved = [Segment(**shard) for shard in state["shards"]]
        tail = Segment(**state["tail"]) if state.get("tail") else None
        for index, shard in enumerate(saved):
            pending, final = out / shard.file, out / shard_name(split, index, len(saved))
            if tail and not pending.exists() and final.exists():
                os.replace(final, pending)  # the final renaming was interrupted: `finish_build` redoes it
            if not (pending.is_file() and pending.stat().st_size == shard.bytes):
                logger.warning("shard %s of the unfinished build is missing or damaged: rebuilding from it", shard.file)
                tail = None
                break
            shards.append(shard)
    if any(out.glob(f"{split}-*-of-*.tfrecord")):
        raise DeepFaceError(
            f"{out} already holds {split} shards but no {MANIFEST_FILE}: they are not from this build. "
            "Delete them or choose another --out."
        )
    vouched = {shard.file for shard in shards}
    remove_temporaries(out)  # partial shards and state files of a killed build
    for leftover in out.glob(f"{split}-*.tfrecord.done"):
        if leftover.name not in vouched:
            leftover.unlink()
    return shards, tail


def save_state(out: Path, settings: dict, shards: list[Segment], tail: Segment | None = None) -> None:
    state = {"settings": settings, "shards": [dataclasses.asdict(shard) for shard in shards]}
    if tail is not None:
        state["tail"] = dataclasses.asdict(tail)
    write_json(out / STATE_FILE, state)


def _reason_counts(skipped: list[dict]) -> dict[str, int]:
    return dict(sorted(collections.Counter(entry["reason"].split(":")[0] for entry in skipped).items()))


def finish_build(out: Path, settings: dict, shards: list[Segment], tail: Segment, max_bad_fraction: float) -> dict:
    """Checks the skipped fraction, gives the shards their final names, writes the manifest."""
    segments = [*shards, tail]
    skipped = [entry for segment in segments for entry in segment.skipped]
    records = sum(shard.records for shard in shards)
    ignored = sum(segment.ignored for segment in segments)
    source = settings["source"]
    if records == 0:
        raise DeepFaceError(
            f"No image of {source} could be stored ({len(skipped)} skipped: {_reason_counts(skipped)}; "
            f"{ignored} files ignored as not images): check source and labels_dir."
        )
    fraction = len(skipped) / (records + len(skipped))
    if fraction > max_bad_fraction:
        examples = "; ".join(f"{entry['file']}: {entry['reason']}" for entry in skipped[:5])
        raise DeepFaceError(
            f"{len(skipped)} of {records + len(skipped)} images of {source} were skipped ({fraction:.2%} > "
            f"max_bad_fraction {max_bad_fraction:.2%}): {_reason_counts(skipped)}, e.g. {examples}. Fix the "
            "source or labels_dir, or raise max_bad_fraction: a rerun keeps the shards already built."
        )
    split = settings["split"]
    files = []
    for index, shard in enumerate(shards):
        final = shard_name(split, index, len(shards))
        os.replace(out / shard.file, out / final)
        files.append({"file": final, "records": shard.records, "bytes": shard.bytes})
    manifest = {
        **settings,
        "shards": files,
        "num_shards": len(files),
        "num_records": records,
        "num_skipped": len(skipped),
        "skipped_by_reason": _reason_counts(skipped),
        "skipped": skipped,
        "ignored_files": {
            "count": ignored,
            "examples": [name for segment in segments for name in segment.ignored_examples][:MAX_EXAMPLES],
        },
        "several_faces": {
            "count": sum(segment.several_faces for segment in segments),
            "examples": [name for segment in segments for name in segment.several_faces_examples][:MAX_EXAMPLES],
        },
        "landmarks_unused": {"count": tail.landmarks_unused, "examples": tail.landmarks_unused_examples},
    }
    write_manifest(out, manifest)  # last: the build is complete
    (out / STATE_FILE).unlink(missing_ok=True)
    return manifest
