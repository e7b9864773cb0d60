# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The output folder: the journal (or `--shard-output` shards), atomic COCO JSON files, overlays, resume.

Every write goes through `writing(path)`: an `OSError` (disk full, permission denied, read-only folder, a file in
the way) becomes an `OutputWriteError` naming the file and the operating system's reason. Results are added to the
journal only after their overlays are written, and the journal is fsync'ed per batch, so a run stopped by such an
error is finished by a rerun with `--resume`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

from .errors import OutputWriteError
from .options import DEFAULT_IMAGES_PER_SHARD

PREDICTIONS = "predictions.json"
JOURNAL = "predictions.jsonl"
IMAGES = "images.json"
FAILURES = "failures.json"
OVERLAYS = "overlays"
SHARDS = "predictions"  # --shard-output: OUT/predictions/part-NNNNN.jsonl (+ info.json)
SHARD_PREFIX, SHARD_SUFFIX = "part-", ".jsonl"
SHARD_INFO = "info.json"


def os_reason(error: OSError, path: str) -> str:
    """The operating system's words for an error writing `path` ("No space left on device"), with the other path it
    concerns when there is one, and "X is a file, not a folder (File exists)" for a file where a folder belongs."""
    reason = error.strerror or str(error)
    filename = getattr(error, "filename", None)
    if filename is None or os.path.basename(os.fsdecode(filename)).startswith(_temporary_prefix(path)):
        return reason  # no path, or write_json_atomic's own temporary file: `path` says it
    filename = os.fsdecode(filename)
    if isinstance(error, (FileExistsError, NotADirectoryError)) and os.path.isfile(filename):
        return f"{filename} is a file, not a folder ({reason})"
    return reason if os.path.abspath(filename) == os.path.abspath(path) else f"{reason}: {filename}"


def _temporary_prefix(path: str) -> str:
    """The name prefix of `write_json_atomic`'s temporary files for `path`."""
    return f".{os.path.basename(path)}."


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Turns an `OSError` raised while writing `path` into an `OutputWriteError` that names it."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as error:
        raise OutputWriteError(path, os_reason(error, path)) from error


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def write_json_atomic(path: str, data: Any) -> None:
    """Writes JSON to a temporary file in the same folder, fsyncs it and renames it over `path` (an `OSError`
    becomes an `OutputWriteError` naming `path`; the temporary file is removed)."""
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        handle, temporary = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(data, stream, separators=(",", ":"))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


def write_bytes(path: str, data: bytes) -> None:
    """Writes a file (an overlay PNG), making its folder; an `OSError` becomes an `OutputWriteError`."""
    with writing(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)


def overlay_path(output_dir: str, file_name: str) -> str:
    """`OUT/overlays/<file_name>.png`."""
    return os.path.join(output_dir, OVERLAYS, *file_name.split("/")) + ".png"


def read_journal(path: str) -> Dict[str, Dict[str, Any]]:
    """file_name -> `{"image", "annotations"}` from a journal; a torn last line (hard kill mid-write) is ignored."""
    entries: Dict[str, Dict[str, Any]] = {}
    if not os.path.isfile(path):
        return entries
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                entry = json.loads(line)
                entries[entry["image"]["file_name"]] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return entries


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def shard_paths(output_dir: str) -> List[str]:
    """The `--shard-output` shards of an output folder (`OUT/predictions/part-NNNNN.jsonl`), in index order."""
    folder = os.path.join(output_dir, SHARDS)
    if not os.path.isdir(folder):
        return []
    names = [name for name in os.listdir(folder) if name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX)]
    return [os.path.join(folder, name) for name in sorted(names)]


def read_shards(output_dir: str) -> Dict[str, Dict[str, Any]]:
    """file_name -> `{"image", "annotations"}` from all `--shard-output` shards (same lines as the journal; a torn
    last line of a shard that was being written when the run was killed is ignored)."""
    entries: Dict[str, Dict[str, Any]] = {}
    for path in shard_paths(output_dir):
        entries.update(read_journal(path))
    return entries


def _shard_file_names(output_dir: str) -> Set[str]:
    """The file names in all shards, without keeping their records in memory."""
    names: Set[str] = set()
    for path in shard_paths(output_dir):
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                try:
                    names.add(json.loads(line)["image"]["file_name"])
                except (ValueError, KeyError, TypeError):
                    continue
    return names


def load_finished(output_dir: str, include_shards: bool = True) -> Dict[str, Dict[str, Any]]:
    """Images already done in an output folder: the journal (and the `--shard-output` shards unless
    `include_shards=False`), plus the `predictions.json` / `images.json` records of images none of these has (e.g. a
    folder whose journal was deleted, or results made elsewhere)."""
    entries = read_shards(output_dir) if include_shards else {}
    entries.update(read_journal(os.path.join(output_dir, JOURNAL)))
    images_path, predictions_path = os.path.join(output_dir, IMAGES), os.path.join(output_dir, PREDICTIONS)
    images = _read_json(images_path).get("images", []) if os.path.isfile(images_path) else []
    records = _read_json(predictions_path) if os.path.isfile(predictions_path) else []
    name_of_id = {image["id"]: image["file_name"] for image in images}
    recovered: Dict[str, Dict[str, Any]] = {}
    for image in images:
        if image["file_name"] not in entries:
            recovered[image["file_name"]] = {"image": image, "annotations": []}
    for record in records:
        file_name = record.get("file_name") or name_of_id.get(record.get("image_id"))
        if file_name is None or file_name in entries:
            continue
        entry = recovered.setdefault(file_name, {"image": {"id": record["image_id"], "file_name": file_name},
                                                 "annotations": []})
        entry["annotations"].append(record)
    entries.update(recovered)
    return entries


def _remove_previous_results(output_dir: str) -> None:
    """Deletes an earlier run's results of both forms (journal, COCO files, shards), so that a fresh run's folder
    holds only its own images and a later --resume does not keep stale ones; overlays are overwritten as they come."""
    single = [os.path.join(output_dir, name) for name in (JOURNAL, PREDICTIONS, IMAGES)]
    stale = [path for path in single if os.path.isfile(path)] + shard_paths(output_dir)
    if not stale:
        return
    print(f"note: replacing the results in {output_dir} (pass --resume to keep them)", file=sys.stderr)
    shard_info = os.path.join(output_dir, SHARDS, SHARD_INFO)
    for path in stale + ([shard_info] if os.path.isfile(shard_info) else []):
        with writing(path):
            os.unlink(path)


def _make_folder(path: str) -> str:
    path = os.path.abspath(path)
    with writing(path):
        os.makedirs(path, exist_ok=True)
    return path


class _Folder:
    """What both output forms share: failures, overlays, the results of an earlier run's `info`."""

    output_dir: str

    def __init__(self) -> None:
        self.failures: Dict[str, Dict[str, str]] = {}
        self.previous_info: Optional[Dict[str, Any]] = None

    def fail(self, file_name: str, path: str, error: str) -> None:
        """Records an input that could not be processed (written to failures.json by `finish`)."""
        self.failures[file_name] = {"file_name": file_name, "path": path, "error": error}

    def write_overlay(self, file_name: str, png: bytes) -> None:
        """Writes `OUT/overlays/<file_name>.png`; call before `add`ing the image, so that an image in the results
        has its overlay."""
        write_bytes(overlay_path(self.output_dir, file_name), png)

    def _write_failures(self) -> None:
        write_json_atomic(os.path.join(self.output_dir, FAILURES),
                          [self.failures[name] for name in sorted(self.failures)])


class OutputFolder(_Folder):
    """The run's output folder: journal appends per batch, atomic assembly of the JSON files."""

    def __init__(self, output_dir: str, resume: bool, info: Dict[str, Any], categories: List[Dict]) -> None:
        super().__init__()
        self.output_dir = _make_folder(output_dir)
        self.info, self.categories = info, categories
        self.entries: Dict[str, Dict[str, Any]] = load_finished(self.output_dir) if resume else {}
        if not resume:
            _remove_previous_results(self.output_dir)
        images_path = os.path.join(self.output_dir, IMAGES)
        if resume and os.path.isfile(images_path):
            self.previous_info = _read_json(images_path).get("info")
        # Start the journal from what is kept (drops torn lines and, without --resume, an old run's entries).
        self.journal_path = os.path.join(self.output_dir, JOURNAL)
        temporary = self.journal_path + ".tmp"
        with writing(self.journal_path):
            with open(temporary, "w", encoding="utf-8") as stream:
                for entry in self.entries.values():
                    stream.write(_dumps(entry) + "\n")
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.journal_path)
            self.journal = open(self.journal_path, "a", encoding="utf-8")

    def is_finished(self, file_name: str) -> bool:
        """Whether the image is already in the results (kept from before, or done in this run)."""
        return file_name in self.entries

    def add(self, entries: Iterable[Dict[str, Any]]) -> None:
        """Appends finished images to the journal and makes them durable (one fsync per batch); they count as
        finished once that succeeded."""
        entries = list(entries)
        with writing(self.journal_path):
            for entry in entries:
                self.journal.write(_dumps(entry) + "\n")
            self.journal.flush()
            os.fsync(self.journal.fileno())
        for entry in entries:
            self.entries[entry["image"]["file_name"]] = entry

    def finish(self) -> None:
        """Writes predictions.json, images.json and failures.json (each atomically) from everything finished."""
        with writing(self.journal_path):
            self.journal.close()
        ordered = [self.entries[name] for name in sorted(self.entries)]
        write_json_atomic(os.path.join(self.output_dir, PREDICTIONS),
                          [record for entry in ordered for record in entry["annotations"]])
        write_json_atomic(os.path.join(self.output_dir, IMAGES),
                          {"info": self.info, "images": [entry["image"] for entry in ordered],
                           "categories": self.categories})
        self._write_failures()


class ShardedOutputFolder(_Folder):
    """`--shard-output`: results as JSON-lines shards `OUT/predictions/part-NNNNN.jsonl`, for runs too large for one
    `predictions.json`.

    Each line is one finished image, `{"image": {"id", "file_name", "width", "height"}, "annotations": [COCO
    records]}` (the journal's format). Lines are appended and flushed as batches finish; a shard is fsync'ed and
    closed after `images_per_shard` images and the next one begins, so a crash loses at most the unsynced tail of
    the open shard (a torn last line is ignored when reading). A resumed run starts a new shard and never rewrites
    old ones. Only file names are kept in memory; `OUT/predictions/info.json` holds `{"info", "categories"}` and
    `failures.json` is written as in the single-file form. `read_shards(OUT)` reads the results back.
    """

    def __init__(self, output_dir: str, resume: bool, info: Dict[str, Any], categories: List[Dict],
                 images_per_shard: int = DEFAULT_IMAGES_PER_SHARD) -> None:
        if images_per_shard < 1:
            raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}.")
        super().__init__()
        self.output_dir = _make_folder(output_dir)
        self.shard_dir = _make_folder(os.path.join(self.output_dir, SHARDS))
        self.info, self.categories, self.images_per_shard = info, categories, images_per_shard
        if resume:
            self.finished_names = _shard_file_names(self.output_dir) | set(
                load_finished(self.output_dir, include_shards=False))
            for path in (os.path.join(self.shard_dir, SHARD_INFO), os.path.join(self.output_dir, IMAGES)):
                if self.previous_info is None and os.path.isfile(path):
                    self.previous_info = _read_json(path).get("info")
        else:
            _remove_previous_results(self.output_dir)
            self.finished_names = set()
        existing = shard_paths(self.output_dir)
        self.next_index = 1 + max((int(os.path.basename(path)[len(SHARD_PREFIX):-len(SHARD_SUFFIX)])
                                   for path in existing), default=-1)
        self.shard: Optional[Any] = None  # the open shard's stream
        self.shard_path = ""
        self.images_in_shard = 0
        write_json_atomic(os.path.join(self.shard_dir, SHARD_INFO), {"info": info, "categories": categories})

    def is_finished(self, file_name: str) -> bool:
        """Whether the image is already in the results (kept from before, or done in this run)."""
        return file_name in self.finished_names

    def _close_shard(self) -> None:
        if self.shard is not None:
            with writing(self.shard_path):
                self.shard.flush()
                os.fsync(self.shard.fileno())
                self.shard.close()
            self.shard, self.images_in_shard = None, 0

    def add(self, entries: Iterable[Dict[str, Any]]) -> None:
        """Appends finished images to the open shard (flushed per batch), rolling over to a new shard when full."""
        for entry in entries:
            if self.shard is None:
                self.shard_path = os.path.join(self.shard_dir, f"{SHARD_PREFIX}{self.next_index:05d}{SHARD_SUFFIX}")
                with writing(self.shard_path):
                    self.shard = open(self.shard_path, "x", encoding="utf-8")
                self.next_index += 1
            with writing(self.shard_path):
                self.shard.write(_dumps(entry) + "\n")
            self.finished_names.add(entry["image"]["file_name"])
            self.images_in_shard += 1
            if self.images_in_shard >= self.images_per_shard:
                self._close_shard()
        if self.shard is not None:
            with writing(self.shard_path):
                self.shard.flush()

    def finish(self) -> None:
        """Closes the open shard (fsync) and writes failures.json."""
        self._close_shard()
        self._write_failures()
