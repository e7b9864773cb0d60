# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Inputs: files, folders and globs -> sorted `InputItem`s; image sizes from file headers; batches of similar shape
planned window by window; decoding a batch's files."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from inference_mask_rcnn import describe_failure

from .errors import SegmentError
from .model import decode_image
from .records import stable_image_id

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
GLOB_CHARACTERS = frozenset("*?[")
SORT_WINDOW_BATCHES = 16  # size grouping looks this many batches ahead
EXIF_ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# What decoding a file may raise for a bad file (the processor's loader turns most into OSError with a sentence).
DECODE_ERRORS = (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError)

# report(item, error text): an input that cannot be processed is recorded as a failure and skipped.
Report = Callable[["InputItem", str], None]


@dataclass(frozen=True)
class InputItem:
    """One image to process: its path on disk and its `file_name` relative to the input root (POSIX separators)."""

    path: str
    file_name: str

    @property
    def image_id(self) -> int:
        return stable_image_id(self.file_name)


def _is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, folder: Optional[str]) -> bool:
    return folder is not None and (path == folder or path.startswith(folder.rstrip(os.sep) + os.sep))


def _walk_images(folder: str, exclude: Optional[str]) -> List[str]:
    """Image files under `folder`, recursively; hidden folders and the `exclude` folder (the output) are skipped."""
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith(".")
                                   and not _inside(os.path.join(directory, name), exclude))
        found.extend(os.path.join(directory, name) for name in files if _is_image_file(name))
    return found


def _glob_root(pattern: str) -> str:
    """The folder before a glob pattern's first wildcard component."""
    fixed = []
    for part in Path(pattern).parts:
        if GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return os.path.abspath(os.path.join(*fixed)) if fixed else os.path.abspath(".")


def collect_inputs(inputs: Sequence[str], exclude: Optional[str] = None) -> Tuple[List[InputItem], List[Dict]]:
    """Expands INPUT arguments into images sorted by `file_name`, and the inputs that matched nothing.

    A folder contributes its image files (recursively, by extension), a glob its matches (folders among them are
    walked), a file itself (whatever its extension). `file_name`s are relative to the deepest folder common to all
    inputs' roots. Returns `(items, problems)`, problems as `{"file_name", "path", "error"}` records.
    """
    exclude = os.path.abspath(exclude) if exclude else None
    roots, paths, problems = [], [], []
    for raw in inputs:
        if os.path.exists(raw):
            absolute = os.path.abspath(raw)
            if os.path.isdir(absolute):
                roots.append(absolute)
                paths.extend(_walk_images(absolute, exclude))
            else:
                roots.append(os.path.dirname(absolute))
                paths.append(absolute)
        elif GLOB_CHARACTERS & set(raw):
            matches = sorted(glob.glob(raw, recursive=True))
            if matches:
                roots.append(_glob_root(raw))
            for match in matches:
                match = os.path.abspath(match)
                if os.path.isdir(match):
                    paths.extend(_walk_images(match, exclude))
                elif _is_image_file(match) and not _inside(match, exclude):
                    paths.append(match)
            if not matches:
                problems.append({"file_name": raw, "path": raw, "error": "the pattern matches no file"})
        else:
            problems.append({"file_name": raw, "path": raw, "error": "no such file or folder"})
    if not roots:
        return [], problems
    root = os.path.commonpath(roots)
    unique: Dict[str, str] = {}
    for path in paths:
        unique.setdefault(Path(os.path.relpath(path, root)).as_posix(), path)
    items = [InputItem(path=unique[name], file_name=name) for name in sorted(unique)]
    ids: Dict[int, str] = {}
    for item in items:
        other = ids.setdefault(item.image_id, item.file_name)
        if other != item.file_name:  # 52-bit SHA-256 prefixes: practically impossible, but never silently merged
            raise SegmentError(f"{other!r} and {item.file_name!r} have the same image_id {item.image_id}; rename one.")
    return items, problems


def read_image_size(path: str) -> Tuple[int, int]:
    """(height, width) after EXIF orientation, from the file header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Image.UnidentifiedImageError as error:
        from image_processing_mask_rcnn import unreadable_image_reason

        raise OSError(f"Could not read image {path!r}: {unreadable_image_reason(os.path.getsize(path))}") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise OSError(f"Could not read image {path!r}: {error}") from error
    return (width, height) if orientation in TRANSPOSING_ORIENTATIONS else (height, width)


def plan_batches(sizes: Sequence[Tuple[int, int]], batch_size: int,
                 window_batches: int = SORT_WINDOW_BATCHES) -> List[List[int]]:
    """Groups item indices into batches of similar shape to keep padding small.

    Within consecutive windows of `batch_size * window_batches` items (input order elsewhere, so progress and the
    journal advance through the input in order), items are sorted by aspect ratio (height / width, which decides the
    resized shape) then by area, and cut into batches of `batch_size`.
    """
    window = max(1, batch_size * window_batches)
    batches = []
    for start in range(0, len(sizes), window):
        indices = list(range(start, min(start + window, len(sizes))))
        indices.sort(key=lambda i: (sizes[i][0] / max(sizes[i][1], 1), sizes[i][0] * sizes[i][1], i))
        batches.extend(indices[offset:offset + batch_size] for offset in range(0, len(indices), batch_size))
    return batches


def input_windows(items: Sequence[InputItem], batch_size: int,
                  window_batches: int = SORT_WINDOW_BATCHES) -> List[Sequence[InputItem]]:
    """The consecutive windows of `batch_size * window_batches` items inside which batches are planned.

    Batches never cross a window, so every executor that plans window by window (`iter_batches` in this process, or
    one Ray task per window) forms the same batches, hence the same padded forward passes and the same results."""
    window = max(1, batch_size * window_batches)
    return [items[start:start + window] for start in range(0, len(items), window)]


def iter_batches(items: Sequence[InputItem], batch_size: int, report: Report,
                 window_batches: int = SORT_WINDOW_BATCHES) -> Iterator[List[InputItem]]:
    """Batches of items with similar shapes, streamed window by window (see `plan_batches`); image sizes come from
    the file headers, and files whose header cannot be read are reported here and left out."""
    for window_items in input_windows(items, batch_size, window_batches):
        readable, sizes = [], []
        for item in window_items:
            try:
                sizes.append(read_image_size(item.path))
                readable.append(item)
            except OSError as error:
                report(item, describe_failure(error))
        for indices in plan_batches(sizes, batch_size, window_batches):
            yield [readable[index] for index in indices]


def decode_batch(items: Sequence[InputItem], processor: Any, report: Report) -> List[Tuple[InputItem, np.ndarray]]:
    """Decodes a batch's files; unreadable ones are reported and left out. Returns [(item, (H, W, 3) uint8 RGB)]."""
    decoded = []
    for item in items:
        try:
            decoded.append((item, decode_image(item.path, processor)))
        except DECODE_ERRORS as error:
            report(item, describe_failure(error))
    return decoded
