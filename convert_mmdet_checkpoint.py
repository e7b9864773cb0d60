# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Convert an MMDetection Mask R-CNN checkpoint into a transformers Hub folder (custom code, safetensors).

    python convert_mmdet_checkpoint.py --config mask-rcnn_r50_fpn_1x_coco [--checkpoint PATH_OR_URL] \
        --output-dir DIR [--push-to-hub REPO_ID]

Without `--checkpoint` the official zoo file is downloaded (and its sha256 prefix checked; `--allow-hash-mismatch`
accepts a file whose published hash is known to be wrong). The checkpoint is read with
`torch.load(weights_only=True)`: pickles that would run code are rejected, never executed. Every key and shape is
checked against the chosen config (the model's own layout, asked on the meta device) before anything is written,
and the output folder appears only complete.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import filecmp
import hashlib
import importlib
import inspect
import json
import logging
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

try:
    from .configuration_mask_rcnn import (
        BACKBONE_STAGE_BLOCKS,
        CAFFE_STYLE_NORMALIZATION,
        COCO_CLASSES,
        DETECTRON2_RESNEXT_NORMALIZATION,
        PYTORCH_STYLE_NORMALIZATION,
        MaskRCNNConfig,
    )
    from .modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
except ImportError:  # run as a script: python convert_mmdet_checkpoint.py (importlib: the remote-code scanner of
    # transformers < 4.51 reads import lines under `except ImportError:` as required packages)
    _configuration = importlib.import_module("configuration_mask_rcnn")
    BACKBONE_STAGE_BLOCKS = _configuration.BACKBONE_STAGE_BLOCKS
    CAFFE_STYLE_NORMALIZATION = _configuration.CAFFE_STYLE_NORMALIZATION
    COCO_CLASSES = _configuration.COCO_CLASSES
    DETECTRON2_RESNEXT_NORMALIZATION = _configuration.DETECTRON2_RESNEXT_NORMALIZATION
    PYTORCH_STYLE_NORMALIZATION = _configuration.PYTORCH_STYLE_NORMALIZATION
    MaskRCNNConfig = _configuration.MaskRCNNConfig

    MaskRCNNForInstanceSegmentation = importlib.import_module("modeling_mask_rcnn").MaskRCNNForInstanceSegmentation

try:
    from . import hub_folder_mask_rcnn as hub_folder  # noqa: F401 - kept as a package sibling
    from .image_processing_mask_rcnn import MaskRCNNImageProcessor
except ImportError:  # run as a script (importlib: see the configuration import above)
    hub_folder = importlib.import_module("hub_folder_mask_rcnn")
    MaskRCNNImageProcessor = importlib.import_module("image_processing_mask_rcnn").MaskRCNNImageProcessor

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint layout: MMDetection key names and shapes, and their names in MaskRCNNForInstanceSegmentation
# ----------------------------------------------------------------------------------------------------------------

# (MMDetection prefix, our prefix) of each part of the model, listed in MMDetection's state-dict order (the box
# head's fc_cls/fc_reg come before its shared_fcs there). "{index}" stands for a module-list index. Backbone names
# are identical (torchvision/MMDetection ResNet names). Both renaming directions are derived from this table.
KEY_PREFIX_RULES: Tuple[Tuple[str, str], ...] = (
    ("backbone.", "backbone."),
    ("neck.lateral_convs.{index}.conv.", "fpn.lateral_convs.{index}."),
    ("neck.fpn_convs.{index}.conv.", "fpn.output_convs.{index}."),
    ("rpn_head.rpn_conv.", "rpn_head.conv."),
    ("rpn_head.rpn_cls.", "rpn_head.objectness_logits."),
    ("rpn_head.rpn_reg.", "rpn_head.box_deltas."),
    ("roi_head.bbox_head.fc_cls.", "box_head.class_logits."),
    ("roi_head.bbox_head.fc_reg.", "box_head.box_deltas."),
    ("roi_head.bbox_head.shared_fcs.0.", "box_head.fc1."),
    ("roi_head.bbox_head.shared_fcs.1.", "box_head.fc2."),
    ("roi_head.mask_head.convs.{index}.conv.", "mask_head.convs.{index}."),
    ("roi_head.mask_head.upsample.", "mask_head.upsample."),
    ("roi_head.mask_head.conv_logits.", "mask_head.mask_logits."),
)


def _prefix_pattern(prefix: str) -> "re.Pattern[str]":
    """Regex matching a key that starts with `prefix`, capturing the `{index}` and the rest of the key."""
    return re.compile("^" + re.escape(prefix).replace(re.escape("{index}"), r"(?P<index>\d+)") + r"(?P<rest>.*)$")


_MMDET_TO_HF = tuple((_prefix_pattern(mmdet), hf) for mmdet, hf in KEY_PREFIX_RULES)
_HF_TO_MMDET = tuple((_prefix_pattern(hf), mmdet) for mmdet, hf in KEY_PREFIX_RULES)


def _rename(key: str, rules: Sequence[Tuple["re.Pattern[str]", str]], kind: str) -> Tuple[int, str]:
    """(index of the matching rule, renamed key); `KeyError` naming `kind` when no rule matches."""
    for rule_index, (pattern, target) in enumerate(rules):
        match = pattern.match(key)
        if match:
            return rule_index, target.format(index=match.groupdict().get("index")) + match.group("rest")
    raise KeyError(f"'{key}' is not a key of {kind}")


def mmdet_key_to_hf_key(mmdet_key: str) -> str:
    """Name of an MMDetection state-dict entry in `MaskRCNNForInstanceSegmentation`.

    Raises `KeyError` for a key that belongs to no part of a Mask R-CNN (ResNet + FPN) model.
    """
    return _rename(mmdet_key, _MMDET_TO_HF, "an MMDetection Mask R-CNN (ResNet + FPN) checkpoint")[1]


def hf_key_to_mmdet_key(hf_key: str) -> str:
    """Name of a `MaskRCNNForInstanceSegmentation` state-dict entry in an MMDetection checkpoint (the inverse of
    `mmdet_key_to_hf_key`). Raises `KeyError` for a key that has no MMDetection counterpart."""
    return _rename(hf_key, _HF_TO_MMDET, "MaskRCNNForInstanceSegmentation with an MMDetection counterpart")[1]


def mmdet_state_dict_shapes(config: MaskRCNNConfig) -> "OrderedDict[str, Tuple[int, ...]]":
    """Every key of an MMDetection Mask R-CNN checkpoint for `config`, in MMDetection's order, with its shape.

    Asks the model: `MaskRCNNForInstanceSegmentation(config)` is built on the meta device (no memory, no weights),
    and its state-dict keys are renamed with `hf_key_to_mmdet_key`. The order is that of `KEY_PREFIX_RULES`
    (MMDetection's module order), and the model's own order within each part. No MMDetection needed.
    """
    with torch.device("meta"):
        model = MaskRCNNForInstanceSegmentation(config)
    renamed = []
    for position, (hf_key, tensor) in enumerate(model.state_dict().items()):
        rule_index, mmdet_key = _rename(hf_key, _HF_TO_MMDET, "MaskRCNNForInstanceSegmentation")
        renamed.append(((rule_index, position), mmdet_key, tuple(tensor.shape)))
    return OrderedDict((mmdet_key, shape) for _, mmdet_key, shape in sorted(renamed))


# ----------------------------------------------------------------------------------------------------------------
# The model zoo: the 21 Mask R-CNN checkpoints of MMDetection 3.3.0's configs/mask_rcnn/metafile.yml
# ----------------------------------------------------------------------------------------------------------------

ZOO_URL_PREFIX = "https://download.openmmlab.com/mmdetection/v2.0/"


@dataclass(frozen=True)
class ZooEntry:
    """One published Mask R-CNN checkpoint: what to build for it and where its weights live."""

    config_name: str
    backbone: str  # "R-50", "R-101", "X-101-32x4d", ...
    style: str  # "pytorch", "caffe" or "c2" (detectron2 ResNeXt weights: pytorch style, BGR input with std)
    epochs: int
    box_ap: float
    mask_ap: Optional[float]
    weights_path: str  # relative to ZOO_URL_PREFIX

    @property
    def url(self) -> str:
        return ZOO_URL_PREFIX + self.weights_path

    @property
    def sha256_prefix(self) -> str:
        """The 8 hex digits MMDetection's publish_model.py appends to the file name (start of its sha256)."""
        return re.search(r"-([0-9a-f]{8})\.pth$", self.weights_path).group(1)

    def normalization(self) -> Dict[str, object]:
        """`MaskRCNNImageProcessor` settings this checkpoint was trained with: image_mean, image_std, channel order."""
        if self.style == "caffe":
            normalization = CAFFE_STYLE_NORMALIZATION
        elif self.style == "c2":
            normalization = DETECTRON2_RESNEXT_NORMALIZATION
        else:
            normalization = PYTORCH_STYLE_NORMALIZATION
        return {key: list(value) if isinstance(value, list) else value for key, value in normalization.items()}

    def config_kwargs(self) -> Dict[str, object]:
        """Keyword arguments of `MaskRCNNConfig` that this checkpoint fixes (backbone depth, width, style)."""
        depth = 50 if self.backbone == "R-50" else 101
        groups, base_width = 1, 4
        match = re.fullmatch(r"X-101-(\d+)x(\d+)d", self.backbone)
        if match:
            groups, base_width = int(match.group(1)), int(match.group(2))
        return {
            "backbone_depth": depth,
            "backbone_groups": groups,
            "backbone_base_width": base_width,
            "backbone_style": "caffe" if self.style == "caffe" else "pytorch",
            # caffe-style and detectron2 ResNeXt configs freeze the batch norms' affine parameters too
            "backbone_batch_norm_trainable": self.style == "pytorch",
            "mmdet_config_name": self.config_name,
        }


_M = "mask_rcnn/"
ZOO: Dict[str, ZooEntry] = {entry.config_name: entry for entry in (
    ZooEntry("mask-rcnn_r50-caffe_fpn_1x_coco", "R-50", "caffe", 12, 38.0, 34.4, _M + "mask_rcnn_r50_caffe_fpn_1x_coco/mask_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.38__segm_mAP-0.344_20200504_231812-0ebd1859.pth"),
    ZooEntry("mask-rcnn_r50_fpn_1x_coco", "R-50", "pytorch", 12, 38.2, 34.7, _M + "mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth"),
    ZooEntry("mask-rcnn_r50_fpn_amp-1x_coco", "R-50", "pytorch", 12, 38.1, 34.7, "fp16/mask_rcnn_r50_fpn_fp16_1x_coco/mask_rcnn_r50_fpn_fp16_1x_coco_20200205-59faf7e4.pth"),
    ZooEntry("mask-rcnn_r50_fpn_2x_coco", "R-50", "pytorch", 24, 39.2, 35.4, _M + "mask_rcnn_r50_fpn_2x_coco/mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40.pth"),
    ZooEntry("mask-rcnn_r101-caffe_fpn_1x_coco", "R-101", "caffe", 12, 40.4, 36.4, _M + "mask_rcnn_r101_caffe_fpn_1x_coco/mask_rcnn_r101_caffe_fpn_1x_coco_20200601_095758-805e06c1.pth"),
    ZooEntry("mask-rcnn_r101_fpn_1x_coco", "R-101", "pytorch", 12, 40.0, 36.1, _M + "mask_rcnn_r101_fpn_1x_coco/mask_rcnn_r101_fpn_1x_coco_20200204-1efe0ed5.pth"),
    ZooEntry("mask-rcnn_r101_fpn_2x_coco", "R-101", "pytorch", 24, 40.8, 36.6, _M + "mask_rcnn_r101_fpn_2x_coco/mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_1x_coco", "X-101-32x4d", "pytorch", 12, 41.9, 37.5, _M + "mask_rcnn_x101_32x4d_fpn_1x_coco/mask_rcnn_x101_32x4d_fpn_1x_coco_20200205-478d0b67.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_2x_coco", "X-101-32x4d", "pytorch", 24, 42.2, 37.8, _M + "mask_rcnn_x101_32x4d_fpn_2x_coco/mask_rcnn_x101_32x4d_fpn_2x_coco_bbox_mAP-0.422__segm_mAP-0.378_20200506_004702-faef898c.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_1x_coco", "X-101-64x4d", "pytorch", 12, 42.8, 38.4, _M + "mask_rcnn_x101_64x4d_fpn_1x_coco/mask_rcnn_x101_64x4d_fpn_1x_coco_20200201-9352eb0d.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_2x_coco", "X-101-64x4d", "pytorch", 24, 42.7, 38.1, _M + "mask_rcnn_x101_64x4d_fpn_2x_coco/mask_rcnn_x101_64x4d_fpn_2x_coco_20200509_224208-39d6f70c.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_1x_coco", "X-101-32x8d", "c2", 12, 42.8, 38.3, _M + "mask_rcnn_x101_32x8d_fpn_1x_coco/mask_rcnn_x101_32x8d_fpn_1x_coco_20220630_173841-0aaf329e.pth"),
    ZooEntry("mask-rcnn_r50-caffe_fpn_ms-poly-2x_coco", "R-50", "caffe", 24, 40.3, 36.5, _M + "mask_rcnn_r50_caffe_fpn_mstrain-poly_2x_coco/mask_rcnn_r50_caffe_fpn_mstrain-poly_2x_coco_bbox_mAP-0.403__segm_mAP-0.365_20200504_231822-a75c98ce.pth"),
    ZooEntry("mask-rcnn_r50-caffe_fpn_ms-poly-3x_coco", "R-50", "caffe", 36, 40.8, 37.0, _M + "mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco_bbox_mAP-0.408__segm_mAP-0.37_20200504_163245-42aa3d00.pth"),
    ZooEntry("mask-rcnn_r50_fpn_ms-poly-3x_coco", "R-50", "pytorch", 36, 40.9, 37.1, _M + "mask_rcnn_r50_fpn_mstrain-poly_3x_coco/mask_rcnn_r50_fpn_mstrain-poly_3x_coco_20210524_201154-21b550bb.pth"),
    ZooEntry("mask-rcnn_r101_fpn_ms-poly-3x_coco", "R-101", "pytorch", 36, 42.7, 38.5, _M + "mask_rcnn_r101_fpn_mstrain-poly_3x_coco/mask_rcnn_r101_fpn_mstrain-poly_3x_coco_20210524_200244-5675c317.pth"),
    ZooEntry("mask-rcnn_r101-caffe_fpn_ms-poly-3x_coco", "R-101", "caffe", 36, 42.9, 38.5, _M + "mask_rcnn_r101_caffe_fpn_mstrain-poly_3x_coco/mask_rcnn_r101_caffe_fpn_mstrain-poly_3x_coco_20210526_132339-3c33ce02.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_ms-poly-3x_coco", "X-101-32x4d", "pytorch", 36, 43.6, 39.0, _M + "mask_rcnn_x101_32x4d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_32x4d_fpn_mstrain-poly_3x_coco_20210524_201410-abcd7859.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_ms-poly-1x_coco", "X-101-32x8d", "c2", 12, 43.4, 39.0, _M + "mask_rcnn_x101_32x8d_fpn_mstrain-poly_1x_coco/mask_rcnn_x101_32x8d_fpn_mstrain-poly_1x_coco_20220630_170346-b4637974.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_ms-poly-3x_coco", "X-101-32x8d", "c2", 36, 44.3, None, _M + "mask_rcnn_x101_32x8d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_32x8d_fpn_mstrain-poly_3x_coco_20210607_161042-8bd2c639.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco", "X-101-64x4d", "pytorch", 36, 44.5, 39.7, _M + "mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco_20210526_120447-c376f129.pth"),
)}  # fmt: skip


def zoo_config(config_name: str, **overrides: object) -> MaskRCNNConfig:
    """`MaskRCNNConfig` of a zoo config name (backbone, style and normalisation fixed by the name).

    Accepts the spellings of `resolve_config_name`; an unknown name raises `ConversionError` (a `ValueError`).
    """
    config_name = resolve_config_name(config_name)
    return MaskRCNNConfig(**{**ZOO[config_name].config_kwargs(), **overrides})


# Metafile model names that differ from the config file names (the ZOO keys).
CONFIG_NAME_ALIASES: Dict[str, str] = {
    "mask-rcnn_r50_fpn_fp16_1x_coco": "mask-rcnn_r50_fpn_amp-1x_coco",
    "mask-rcnn_r50_fpn_mstrain-poly_3x_coco": "mask-rcnn_r50_fpn_ms-poly-3x_coco",
    "mask-rcnn_x101-64x4d_fpn_ms-poly-3x_coco": "mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco",
}


class ConversionError(ValueError):
    """A checkpoint, config name or output location that cannot be converted; the message says why and what to do."""


def resolve_config_name(name: str) -> str:
    """The ZOO key for a config file name, a metafile model name, or either with a directory and/or `.py`."""
    candidate = os.path.basename(str(name).strip())
    if candidate.endswith(".py"):
        candidate = candidate[: -len(".py")]
    candidate = CONFIG_NAME_ALIASES.get(candidate, candidate)
    if candidate not in ZOO:
        known = "\n  ".join(sorted(ZOO))
        raise ConversionError(
            f"Unknown MMDetection Mask R-CNN config '{name}'. Valid names (config files of "
            f"configs/mask_rcnn with published weights):\n  {known}"
        )
    return candidate


# ----------------------------------------------------------------------------------------------------------------
# Getting the checkpoint file: local path, URL, or the official zoo download (sha256-checked, cached)
# ----------------------------------------------------------------------------------------------------------------

CACHE_DIR_ENV = "MASK_RCNN_HUB_CACHE"
_DOWNLOAD_TIMEOUT_S = 60
_REMOTE_SCHEMES = ("http", "https", "file")


def default_cache_dir() -> Path:
    """Where downloaded checkpoints are kept: `$MASK_RCNN_HUB_CACHE`, else `~/.cache/mask_rcnn_hub`."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mask_rcnn_hub"


def sha256_of_file(path: Union[str, Path], chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


ALLOW_HASH_MISMATCH_FLAG = "--allow-hash-mismatch"


def verify_sha256_prefix(path: Union[str, Path], expected_prefix: str, allow_mismatch: bool = False) -> bool:
    """Whether sha256(file) starts with `expected_prefix` (MMDetection's file-name suffix).

    A mismatch raises `ConversionError` naming the override flag, or with `allow_mismatch` (for a file whose
    published hash is known to be wrong) is logged as a warning with both hashes and returns False.
    """
    actual = sha256_of_file(path)
    if actual.startswith(expected_prefix):
        return True
    if allow_mismatch:
        logger.warning("Checksum mismatch for %s accepted (%s): its sha256 is %s, the official file name says it "
                       "starts with %s.", path, ALLOW_HASH_MISMATCH_FLAG, actual, expected_prefix)
        return False
    raise ConversionError(
        f"Checksum mismatch for {path}: the sha256 should start with {expected_prefix} (the suffix of the "
        f"official file name) but it is {actual}. The file is corrupt or not the published checkpoint; "
        "delete it and download it again. Only if you know the published hash is wrong and trust this file, pass "
        f"{ALLOW_HASH_MISMATCH_FLAG} (allow_hash_mismatch=True) to convert it anyway."
    )


def _download_url(url: str, destination: Path) -> None:
    """Copy `url` (http, https or file) to `destination`. Network errors propagate (`urllib.error.URLError`,
    `OSError`); tests replace this function to simulate the download host."""
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as output:
        shutil.copyfileobj(response, output, length=1 << 20)


def _zoo_entry_for_file_name(file_name: str) -> Optional[ZooEntry]:
    """The zoo entry whose official checkpoint has this file name, if any."""
    for entry in ZOO.values():
        if entry.url.rsplit("/", 1)[-1] == file_name:
            return entry
    return None


def download_checkpoint(url: str, cache_dir: Optional[Union[str, Path]] = None,
                        sha256_prefix: Optional[str] = None, allow_hash_mismatch: bool = False) -> Path:
    """Download `url` into the cache (once) and return the local path.

    When `sha256_prefix` is given, a cached copy is reused only if it matches, and a fresh download that does not
    match is deleted and reported with both hashes — unless `allow_hash_mismatch`, which keeps and reuses it (with
    a warning). Files without a known hash are cached under a folder named after the URL, so two URLs ending in the
    same file name never share a cache entry.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    file_name = os.path.basename(urllib.parse.urlparse(url).path) or "checkpoint.pth"
    if sha256_prefix is None:
        cache = cache / f"url-{hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]}"
    target = cache / file_name
    if target.is_file():
        if sha256_prefix is None or sha256_of_file(target).startswith(sha256_prefix):
            logger.info("Using cached %s", target)
            return target
        if allow_hash_mismatch:
            logger.warning("Using cached %s although its sha256 does not start with %s (%s).", target,
                           sha256_prefix, ALLOW_HASH_MISMATCH_FLAG)
            return target
        logger.warning("Cached %s does not match its sha256 prefix %s; downloading it again.", target, sha256_prefix)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".part", dir=cache)
    except OSError as error:
        raise ConversionError(
            f"Cannot write to the download cache {cache} ({error.strerror or error}); choose another with "
            f"--cache-dir or ${CACHE_DIR_ENV}.") from None
    os.close(handle)
    partial = Path(partial_name)
    try:
        logger.info("Downloading %s", url)
        try:
            _download_url(url, partial)
        except urllib.error.HTTPError as error:
            raise ConversionError(
                f"Could not download {url}: the server answered HTTP {error.code} ({error.reason}) — pass "
                "--checkpoint PATH to a local copy."
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise ConversionError(
                f"Could not download {url} ({reason}; no network?) — pass --checkpoint PATH to a local copy."
            ) from None
        if sha256_prefix is not None:
            verify_sha256_prefix(partial, sha256_prefix, allow_hash_mismatch)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    return target


def fetch_checkpoint(config_name: str, checkpoint: Optional[Union[str, Path]] = None,
                     cache_dir: Optional[Union[str, Path]] = None, allow_hash_mismatch: bool = False) -> Path:
    """Local path of the checkpoint to convert.

    `checkpoint` may be a local path, an http(s)/file URL, or None for the official zoo file of `config_name`.
    Official zoo files (recognised by their file name) are checked against the sha256 prefix in their name;
    `allow_hash_mismatch` turns a mismatch into a warning (for a file whose published hash is wrong).
    """
    entry = ZOO[resolve_config_name(config_name)]
    if checkpoint is None:
        return download_checkpoint(entry.url, cache_dir, entry.sha256_prefix, allow_hash_mismatch)
    source = str(checkpoint)
    scheme = urllib.parse.urlparse(source).scheme.lower()
    file_name = os.path.basename(urllib.parse.urlparse(source).path if scheme in _REMOTE_SCHEMES else source)
    official = _zoo_entry_for_file_name(file_name)
    if official is not None and official.config_name != entry.config_name:
        logger.warning("%s is the official checkpoint of %s, but it is being converted with config %s.",
                       file_name, official.config_name, entry.config_name)
    expected_prefix = official.sha256_prefix if official is not None else None
    if scheme in _REMOTE_SCHEMES:
        return download_checkpoint(source, cache_dir, expected_prefix, allow_hash_mismatch)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConversionError(f"Checkpoint file {path} does not exist (or is not a file).")
    if expected_prefix is not None:
        verify_sha256_prefix(path, expected_prefix, allow_hash_mismatch)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Reading a checkpoint without executing pickled code
# ----------------------------------------------------------------------------------------------------------------


def _named(obj: Any, qualified_name: str) -> Any:
    """`obj` as the pickle names it: torch's allow-list keys each object by its `__module__` and name, and the
    `(object, "name")` form that could alias a name exists only from torch 2.6. A function under another name is
    wrapped (calls go straight to `obj`); a class is `obj` itself, renamed (only for our own stand-in)."""
    module, name = qualified_name.rsplit(".", 1)
    if getattr(obj, "__module__", None) == module and getattr(obj, "__qualname__", None) == name:
        return obj
    if isinstance(obj, type):
        renamed = obj
    else:
        def renamed(*args: Any) -> Any:
            return obj(*args)
    renamed.__module__, renamed.__name__, renamed.__qualname__ = module, name, name
    return renamed


class _IgnoredHistoryBuffer:
    """Inert stand-in for `mmengine.logging.history_buffer.HistoryBuffer` (training log values in the
    `message_hub` of MMDetection 3.x training checkpoints). It has no methods, so unpickling only fills its
    `__dict__` with already-restricted data; mmengine is never imported and the message hub is discarded."""


_IgnoredHistoryBuffer = _named(_IgnoredHistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer")


def _extra_safe_globals() -> List[Any]:
    """Globals besides tensors and plain containers that real MMDetection checkpoints carry in `meta`/`message_hub`:
    numpy arrays, dtypes and scalars (under the numpy 1.x and 2.x module paths) and mmengine's HistoryBuffer (as an
    inert stand-in). Nothing here can run code: none of them calls an attribute or function named by the file.
    `_codecs.encode` rebuilds the bytes inside numpy scalars (protocol-2 pickles); torch >= 2.5 allows it itself."""
    allowed: List[Any] = [_IgnoredHistoryBuffer, codecs.encode]  # pickled as _codecs.encode
    try:
        import numpy
    except ImportError:  # numpy is optional; checkpoints without numpy objects still load
        return allowed
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray  # numpy 1.x
    allowed += [numpy.ndarray, numpy.dtype]
    for module_path in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [_named(multiarray._reconstruct, f"{module_path}._reconstruct"),
                    _named(multiarray.scalar, f"{module_path}.scalar")]
    dtype_classes = getattr(numpy, "dtypes", None)
    if dtype_classes is not None:
        for name in dir(dtype_classes):
            value = getattr(dtype_classes, name)
            if isinstance(value, type) and issubclass(value, numpy.dtype):
                allowed.append(value)
    return allowed


def _torch_load_weights_only(handle: Any) -> Any:
    """`torch.load(weights_only=True)` with `_extra_safe_globals()` allowed for this call only, using what the
    installed torch has: the `safe_globals` context manager (torch >= 2.5), else the process-wide list of
    `add_safe_globals` (torch 2.4), restored afterwards."""
    serialization = torch.serialization
    allowed = _extra_safe_globals()
    if hasattr(serialization, "safe_globals"):
        with serialization.safe_globals(allowed):
            return torch.load(handle, map_location="cpu", weights_only=True)
    previous = list(serialization.get_safe_globals())  # a copy: torch 2.4 returns its own list, extended in place
    serialization.add_safe_globals(allowed)
    try:
        return torch.load(handle, map_location="cpu", weights_only=True)
    finally:
        serialization.clear_safe_globals()
        serialization.add_safe_globals(previous)


_UNSAFE_PICKLE_PATTERNS = (
    re.compile(r"GLOBAL (\S+?)(?: was not an allowed global| whose module)"),
    re.compile(r"(unrecognized function .*?)(?:\n|$)"),
    re.compile(r"(Can only build .*?)(?:\n|$)"),
)
# What torch raises for a truncated or damaged file (seen by cutting and bit-flipping checkpoints on torch 2.4 and
# 2.14): the zip reader (RuntimeError naming PytorchStreamReader, inline_container or a missing record; OSError
# EINVAL when it seeks outside a cut-off file) and the legacy/pickle reader (EOF, bytes that decode as nonsense:
# UnicodeDecodeError and other ValueErrors, struct.error, an unknown codec or storage key, a wrong storage size).
_DAMAGED_FILE_ERRORS = (EOFError, pickle.UnpicklingError, ValueError, struct.error, LookupError, AssertionError,
                        zipfile.BadZipFile)
_DAMAGED_FILE_RUNTIME_MESSAGES = ("PytorchStreamReader", "inline_container", "hasRecord", "corrupt",
                                  "unexpected EOF", "magic number", "wrong byte size", "protocol version")


def _is_damaged_file_error(error: BaseException) -> bool:
    """Whether an exception from `torch.load` means the file is damaged. Anything else (out of memory, a missing
    torch function, a failing disk) is about the environment and keeps its own message."""
    if isinstance(error, _DAMAGED_FILE_ERRORS):
        return True
    if isinstance(error, OSError):
        return error.errno == errno.EINVAL
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _DAMAGED_FILE_RUNTIME_MESSAGES)


def load_mmdet_checkpoint(path: Union[str, Path]) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, Any]]:
    """Read an MMDetection checkpoint safely and return `(state_dict, meta)`.

    Accepts `{"state_dict": ..., "meta": ...}` (2.x and 3.x, training checkpoints included) and plain state dicts
    (then `meta` is `{}`); a leading `module.` (DataParallel) is stripped from the keys. Raises `ConversionError`
    for files that cannot be opened, files that are not (intact) PyTorch checkpoints, and pickles that reference
    anything beyond tensors, containers, numpy values and mmengine's log buffer — such files are rejected before any
    of their code can run. Other errors while reading (out of memory, an incompatible torch) propagate unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"Checkpoint file {path} does not exist (or is not a file).")
    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is empty (0 bytes), not a PyTorch checkpoint.")
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise ConversionError(f"Cannot open {path}: {error.strerror or error}.") from error
    try:
        with handle:
            checkpoint = _torch_load_weights_only(handle)
    except pickle.UnpicklingError as error:
        message = str(error)
        for pattern in _UNSAFE_PICKLE_PATTERNS:
            match = pattern.search(message)
            if match:
                raise ConversionError(
                    f"Refusing to load {path}: its pickle needs `{match.group(1)}`, which is not a tensor, container "
                    "or numpy value, so loading it could execute code. Nothing was executed. If you trust the file, "
                    "re-save only its weights with torch.save({'state_dict': torch.load(path, weights_only=False)"
                    "['state_dict']}, 'clean.pth') and convert that."
                ) from None
        raise ConversionError(f"{path} is not a readable PyTorch checkpoint ({_first_line(message)}).") from None
    except Exception as error:  # noqa: BLE001 — classified: damaged files become ConversionError, the rest re-raise
        if not _is_damaged_file_error(error):
            raise
        detail = _first_line(str(error)) or type(error).__name__
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt or another format): {detail}"
        ) from None
    return _split_checkpoint(checkpoint, path)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:  # torch puts the useful part after its generic weights_only advice
        if line.startswith("WeightsUnpickler error:"):
            return line
    return lines[-1] if lines else ""


def _split_checkpoint(checkpoint: Any, path: Path) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, Any]]:
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dictionary.")
    if "state_dict" in checkpoint:
        state_dict, meta = checkpoint["state_dict"], checkpoint.get("meta") or {}
    elif checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        state_dict, meta = checkpoint, {}
    else:
        keys = ", ".join(map(str, list(checkpoint)[:10]))
        raise ConversionError(
            f"{path} has no 'state_dict' entry and is not a plain state dict (top-level keys: {keys or 'none'})."
        )
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"The 'state_dict' entry of {path} is a {type(state_dict).__name__}, not a mapping.")
    if not isinstance(meta, Mapping):
        meta = {}
    not_tensors = [str(key) for key, value in state_dict.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(f"The state dict of {path} has entries that are not tensors: {_summarise(not_tensors)}.")
    cleaned: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        cleaned[key[len("module."):] if key.startswith("module.") else key] = value
    return cleaned, dict(meta)


# ----------------------------------------------------------------------------------------------------------------
# Validation: architecture, backbone, classes, then every key and shape
# ----------------------------------------------------------------------------------------------------------------

_DEPTH_BY_STAGE_BLOCKS = {blocks: depth for depth, blocks in BACKBONE_STAGE_BLOCKS.items()}
_MAX_LISTED = 12


def _summarise(items: Sequence[str], limit: int = _MAX_LISTED) -> str:
    """`a, b, c` — or the first `limit` items and how many more, so huge lists stay readable."""
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items) - limit} more, {len(items)} in all)"


def _backbone_name(depth: Optional[int], groups: int, base_width: int, stage_blocks: Sequence[int]) -> str:
    blocks = "-".join(map(str, stage_blocks))
    depth_text = str(depth) if depth is not None else "?"
    if groups > 1:
        return f"ResNeXt-{depth_text} {groups}x{base_width}d (blocks {blocks})"
    return f"ResNet-{depth_text} (blocks {blocks})"


def _checkpoint_backbone(state_dict: Mapping[str, torch.Tensor]) -> Optional[Tuple[Tuple[int, ...], int, int]]:
    """(blocks per stage, groups, base width) of a bottleneck ResNet/ResNeXt backbone in the checkpoint, or None
    when the checkpoint has no such backbone. Base width is 4 for plain ResNets (unused there)."""
    stage_blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(1)) for key in state_dict
                   for m in [re.match(rf"backbone\.layer{stage}\.(\d+)\.conv1\.weight$", key)] if m}
        stage_blocks.append(len(indices))
    conv2 = state_dict.get("backbone.layer1.0.conv2.weight")
    if 0 in stage_blocks or "backbone.layer1.0.conv3.weight" not in state_dict or conv2 is None or conv2.dim() != 4:
        return None
    width, in_per_group = int(conv2.shape[0]), int(conv2.shape[1])
    groups = max(width // max(in_per_group, 1), 1)
    # stage 1 has 64 planes, where `bottleneck_width(64, groups, base_width)` is `groups * base_width`
    base_width = width // groups if groups > 1 else 4
    return tuple(stage_blocks), groups, base_width


def _configs_matching(stage_blocks: Sequence[int], groups: int, base_width: int) -> List[str]:
    matches = []
    depth = _DEPTH_BY_STAGE_BLOCKS.get(tuple(stage_blocks))
    for name, entry in ZOO.items():
        kwargs = entry.config_kwargs()
        if kwargs["backbone_depth"] == depth and kwargs["backbone_groups"] == groups and (
            groups == 1 or kwargs["backbone_base_width"] == base_width
        ):
            matches.append(name)
    return matches


def check_architecture(state_dict: Mapping[str, torch.Tensor], config_name: str) -> None:
    """Raise `ConversionError` with a specific message when the checkpoint is another kind of detector
    (RetinaNet / single-stage, Cascade, Faster R-CNN, RPN, C4) or has a backbone the config does not describe."""
    config_name = resolve_config_name(config_name)
    keys = list(state_dict)
    if not keys:
        raise ConversionError("The checkpoint's state dict is empty.")

    def has(prefix_pattern: str) -> bool:
        return any(re.match(prefix_pattern, key) for key in keys)

    if has(r"bbox_head\.retina_"):
        raise ConversionError(
            "This is a RetinaNet checkpoint (bbox_head.retina_* keys, a single-stage detector without RoI heads or "
            "masks); it cannot be converted to Mask R-CNN.")
    if has(r"bbox_head\.") and not has(r"roi_head\."):
        raise ConversionError(
            "This is a single-stage detector checkpoint (top-level bbox_head.* keys, no roi_head); it cannot be "
            "converted to Mask R-CNN.")
    if has(r"roi_head\.(bbox_head|mask_head)\.\d+\."):
        kind = "Cascade Mask R-CNN (or HTC)" if has(r"roi_head\.mask_head\.\d+\.") else "Cascade R-CNN"
        raise ConversionError(
            f"This is a {kind} checkpoint (multi-stage roi_head.bbox_head.0.* / mask_head.0.* keys); this converter "
            "supports the single-stage-RoI-head Mask R-CNN only.")
    if has(r"roi_head\.shared_head\."):
        raise ConversionError(
            "This is a C4 (ResNet shared-head, no FPN) checkpoint such as mask-rcnn_r50-caffe-c4_1x_coco; only the "
            "FPN Mask R-CNN configs are supported.")
    if has(r"roi_head\.bbox_head\.") and not has(r"roi_head\.mask_head\."):
        raise ConversionError(
            "This is a Faster R-CNN checkpoint: it has a box head (roi_head.bbox_head.*) but no mask head "
            "(roi_head.mask_head.*), so it cannot produce masks. Use a Mask R-CNN checkpoint.")
    if has(r"rpn_head\.") and not has(r"roi_head\."):
        raise ConversionError("This is an RPN-only checkpoint (rpn_head.* but no roi_head.*); it has no detection "
                              "or mask heads.")

    backbone = _checkpoint_backbone(state_dict)
    if backbone is None:
        if has(r"backbone\.layer1\.0\.conv2\.") and not has(r"backbone\.layer1\.0\.conv3\."):
            raise ConversionError(
                "The checkpoint's backbone is a BasicBlock ResNet (ResNet-18/34: no conv3 in its blocks); the zoo "
                "configs use bottleneck ResNet-50/101 or ResNeXt-101 backbones.")
        if has(r"backbone\.") and not has(r"backbone\.layer\d"):
            sample = _summarise(sorted({".".join(key.split(".")[:2]) for key in keys if key.startswith("backbone.")}), 5)
            raise ConversionError(f"The checkpoint's backbone is not a ResNet/ResNeXt (its modules: {sample}).")
        return  # no recognisable backbone keys at all: the key comparison reports them as missing
    stage_blocks, groups, base_width = backbone
    config = zoo_config(config_name)
    expected = (tuple(config.backbone_stage_blocks), config.backbone_groups,
                config.backbone_base_width if config.backbone_groups > 1 else 4)
    if (stage_blocks, groups, base_width) != expected:
        found = _backbone_name(_DEPTH_BY_STAGE_BLOCKS.get(stage_blocks), groups, base_width, stage_blocks)
        wanted = _backbone_name(config.backbone_depth, *expected[1:], expected[0])
        matching = _configs_matching(stage_blocks, groups, base_width)
        hint = (f" Configs with that backbone: {', '.join(matching)}." if matching
                else " None of the 21 zoo configs uses that backbone.")
        raise ConversionError(
            f"Backbone mismatch: the checkpoint holds a {found} backbone, but config {config_name} expects a "
            f"{wanted}.{hint}")


def _training_config_text(meta: Mapping[str, Any]) -> Optional[str]:
    """The training config text stored in meta by MMDetection 2.x (`config`) or mmengine (`cfg`), if any."""
    for key in ("config", "cfg"):
        value = meta.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _uniform_match(pattern: str, text: str) -> Optional[str]:
    values = {re.sub(r"\s+", "", value) for value in re.findall(pattern, text)}
    return values.pop() if len(values) == 1 else None


def check_training_config(meta: Mapping[str, Any], config_name: str) -> None:
    """When the checkpoint's own training config text is in `meta`, check that its backbone style and input
    normalisation agree with `config_name` (these do not change any shape, so a wrong choice would convert
    "successfully" and then detect badly). Checks nothing when meta carries no config text."""
    text = _training_config_text(meta)
    if text is None:
        return
    config_name = resolve_config_name(config_name)
    config = zoo_config(config_name)
    normalization = ZOO[config_name].normalization()
    problems = []
    style = _uniform_match(r"style\s*=\s*['\"](caffe|pytorch)['\"]", text)
    if style is not None and style != config.backbone_style:
        problems.append(f"backbone style '{style}' (config: '{config.backbone_style}')")
    for field, values in (("mean", normalization["image_mean"]), ("std", normalization["image_std"])):
        found = _uniform_match(rf"\b{field}\s*=\s*\[([^\]]*)\]", text)
        if found is None:
            continue
        try:
            numbers = [float(item) for item in found.split(",") if item]
        except ValueError:
            continue
        if len(numbers) == 3 and max(abs(a - b) for a, b in zip(numbers, values)) > 1e-3:
            problems.append(f"{field}={numbers} (config: {values})")
    if problems:
        raise ConversionError(
            f"The checkpoint was trained with {'; '.join(problems)}, which does not match config {config_name}. "
            "Pick the config this checkpoint was trained with (e.g. a '-caffe' config for caffe-style weights).")


def class_names_from_meta(meta: Mapping[str, Any]) -> Optional[Tuple[str, ...]]:
    """Class names stored by MMDetection: `meta["dataset_meta"]["classes"]` (3.x) or `meta["CLASSES"]` (2.x)."""
    dataset_meta = meta.get("dataset_meta")
    names = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None
    if names is None:
        names = meta.get("CLASSES")
    if names is None:
        return None
    if isinstance(names, str):
        names = (names,)
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise ConversionError(f"The class names in the checkpoint meta are not a list of strings: {names!r:.200}")
    return tuple(names)


def resolve_class_names(state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                        class_names: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Class names for the converted model: `class_names` if given, else from meta, else COCO's 80. Raises
    `ConversionError` if their count differs from the box classifier's rows minus one (background)."""
    if class_names is not None:
        names, source = tuple(class_names), "the class names given"
    else:
        from_meta = class_names_from_meta(meta)
        if from_meta is not None:
            names, source = from_meta, "the checkpoint meta"
        else:
            names, source = tuple(COCO_CLASSES), "the COCO default (no class names in the checkpoint meta)"
    classifier = state_dict.get("roi_head.bbox_head.fc_cls.weight")
    if classifier is not None and classifier.dim() == 2 and int(classifier.shape[0]) - 1 != len(names):
        raise ConversionError(
            f"Class count mismatch: {source} has {len(names)} classes, but roi_head.bbox_head.fc_cls.weight has "
            f"{int(classifier.shape[0])} rows ({int(classifier.shape[0]) - 1} classes + background). Pass the "
            "matching class names (--class-names / class_names=...).")
    if len(set(names)) != len(names):
        logger.warning("Class names are not unique; label2id keeps the last id of each repeated name.")
    return names


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], config: MaskRCNNConfig) -> List[str]:
    """Check every key, shape and dtype against `mmdet_state_dict_shapes(config)`.

    Raises `ConversionError` listing missing, unexpected, mis-shaped and non-float entries (with counts). Only
    BatchNorm `num_batches_tracked` counters may be missing (older checkpoints lack them; inference never reads
    them): their names are returned so the caller can add zeros.
    """
    expected = mmdet_state_dict_shapes(config)
    missing = [key for key in expected if key not in state_dict]
    missing_counters = [key for key in missing if key.endswith(".num_batches_tracked")]
    missing = [key for key in missing if not key.endswith(".num_batches_tracked")]
    unexpected = [key for key in state_dict if key not in expected]
    mis_shaped = [f"{key} {tuple(state_dict[key].shape)} (expected {expected[key]})"
                  for key in expected if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key])]
    wrong_dtype = [f"{key} ({value.dtype})" for key, value in state_dict.items()
                   if key in expected and not key.endswith(".num_batches_tracked") and not value.is_floating_point()]
    if missing or unexpected or mis_shaped or wrong_dtype:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_summarise(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_summarise(unexpected)}")
        if mis_shaped:
            parts.append(f"{len(mis_shaped)} with the wrong shape: {_summarise(mis_shaped)}")
        if wrong_dtype:
            parts.append(f"{len(wrong_dtype)} not floating point: {_summarise(wrong_dtype)}")
        raise ConversionError(
            f"The checkpoint does not match config {config.mmdet_config_name} ({len(expected)} expected entries): "
            + "; ".join(parts) + ".")
    return missing_counters


# ----------------------------------------------------------------------------------------------------------------
# Building and writing the Hub folder
# ----------------------------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent


@dataclass
class PreparedConversion:
    """Everything the output folder is made of, computed and validated before any file is written."""

    config: MaskRCNNConfig
    hf_state_dict: Dict[str, torch.Tensor]


def prepare_conversion(config_name: str, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                       class_names: Optional[Sequence[str]] = None) -> PreparedConversion:
    """Validate an MMDetection state dict for `config_name` and build the config and HF-named float32 tensors."""
    config_name = resolve_config_name(config_name)
    check_architecture(state_dict, config_name)
    check_training_config(meta, config_name)
    names = resolve_class_names(state_dict, meta, class_names)
    config = zoo_config(config_name, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    missing_counters = validate_state_dict(state_dict, config)
    if missing_counters:
        logger.info("Adding %d missing BatchNorm num_batches_tracked counters (zeros; unused at inference).",
                    len(missing_counters))
    hf_state_dict: Dict[str, torch.Tensor] = {}
    storages_seen = set()
    for mmdet_key in mmdet_state_dict_shapes(config):
        if mmdet_key in state_dict:
            tensor = state_dict[mmdet_key]
        else:
            tensor = torch.zeros((), dtype=torch.int64)
        if mmdet_key.endswith(".num_batches_tracked"):
            tensor = tensor.to(torch.int64)
        else:
            tensor = tensor.to(torch.float32)
        tensor = tensor.contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if tensor.numel() and storage in storages_seen:  # safetensors refuses tensors that share memory
            tensor = tensor.clone()
        storages_seen.add(storage)
        hf_state_dict[mmdet_key_to_hf_key(mmdet_key)] = tensor
    return PreparedConversion(config=config, hf_state_dict=hf_state_dict)


def config_json_dict(config: MaskRCNNConfig) -> Dict[str, Any]:
    """Full `config.json` content: every field written out (so later default changes cannot alter a converted
    model), plus the remote-code entries (`hub_folder_mask_rcnn.complete_config`) and `dtype`."""
    content = json.loads(config.to_json_string(use_diff=False))
    content.pop("_name_or_path", None)
    content.pop("torch_dtype", None)
    content["dtype"] = "float32"
    return hub_folder.complete_config(content)


def preprocessor_json_dict(config_name: str) -> Dict[str, Any]:
    """`preprocessor_config.json` content: every setting of `MaskRCNNImageProcessor` (its defaults are
    MMDetection's test pipeline) with the normalisation of `config_name`'s checkpoint, plus its `auto_map`."""
    processor = MaskRCNNImageProcessor(**ZOO[resolve_config_name(config_name)].normalization())
    settings = inspect.signature(MaskRCNNImageProcessor.__init__).parameters
    # only the constructor's settings: to_dict() adds version-dependent transformers bookkeeping (_processor_class),
    # and only those set: transformers 4.x keeps None-valued attributes (None is each setting's default), 5.x drops them
    return hub_folder.complete_preprocessor(
        {key: value for key, value in processor.to_dict().items() if key in settings and value is not None})


def model_card_text(prepared: PreparedConversion, config_name: str, checkpoint_path: Path, official: bool) -> str:
    """The folder's card: MMDetection's published figures only for MMDetection's own (sha256-checked) weights."""
    entry = ZOO[config_name]
    published = {"box AP": entry.box_ap, "mask AP": entry.mask_ap} if official else None
    return hub_folder.model_card(config_json_dict(prepared.config), config_name, published,
                                 source=checkpoint_path.name)


def write_hf_folder(prepared: PreparedConversion, folder: Path, code_dir: Optional[Path] = None,
                    card: Optional[str] = None) -> List[str]:
    """Write the complete Hub folder (configs, weights, code files, card, requirements.txt, .gitattributes) into
    `folder` with `hub_folder_mask_rcnn.write_hub_folder`; returns its Hub file names."""
    return hub_folder.write_hub_folder(
        folder, config=config_json_dict(prepared.config),
        preprocessor=preprocessor_json_dict(prepared.config.mmdet_config_name),
        state_dict=prepared.hf_state_dict, card=card, sources=[REPO_ROOT if code_dir is None else code_dir])


def _check_output_dir(output_dir: Path) -> None:
    """Refuse a path that is a file, or a folder holding another model's config.json (it would be overwritten)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"Output path {output_dir} exists and is not a folder.")
    config_path = output_dir / "config.json"
    if not config_path.is_file():
        return
    try:
        with open(config_path, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    if model_type != MaskRCNNConfig.model_type:
        raise ConversionError(
            f"Output folder {output_dir} already holds a config.json that is not a Mask R-CNN config (model_type "
            f"{model_type!r}); refusing to overwrite it. Choose another --output-dir.")


def _publish_files(staging: Path, output_dir: Path) -> None:
    """Move each finished file from `staging` into `output_dir`, replacing only files of the same name.

    Nothing else in `output_dir` is touched, so converting into the repository root (`--output-dir .`) only adds
    `model.safetensors` and refreshes the configs. Files already identical (the repository converting into itself)
    are left as they are; an existing card keeps its text (only its widget examples are replaced by the new
    card's, which carry no outputs yet) and an existing `.gitattributes` only gains missing LFS rules. Configs move
    last, so the folder never points at files that are not there yet.
    """
    names = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*") if path.is_file())
    ordered = [name for name in names if not name.endswith(".json")] + [name for name in names if name.endswith(".json")]
    for name in ordered:
        source, target = staging / name, output_dir / name
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            continue
        if name == hub_folder.CARD_FILE and target.is_file():
            widget = hub_folder.split_card(source.read_text(encoding="utf-8"))[0].get("widget") or []
            target.write_text(hub_folder.replace_widget(target.read_text(encoding="utf-8"), widget), encoding="utf-8")
            continue
        if name == hub_folder.GITATTRIBUTES_FILE and target.is_file():
            hub_folder.write_gitattributes(output_dir)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def _require_hub_token() -> str:
    try:
        from huggingface_hub import get_token
    except ImportError as error:
        raise ConversionError(f"--push-to-hub needs huggingface_hub ({error}).") from None
    token = get_token()
    if not token:
        raise ConversionError(
            "--push-to-hub needs a Hugging Face token, and none was found: run `hf auth login` (or set HF_TOKEN) "
            "first. Nothing was converted.")
    return token


def push_folder_to_hub(folder: Path, repo_id: str, token: str, config_name: str) -> List[str]:
    """Create `repo_id` if needed and upload the converted folder's Hub files (and nothing else) in one commit."""
    try:
        return hub_folder.upload_hub_folder(folder, repo_id, token=token,
                                            commit_message=f"Add Mask R-CNN converted from MMDetection {config_name}")
    except Exception as error:  # noqa: BLE001 — network, auth and HTTP errors all end the same way
        raise ConversionError(
            f"The converted folder {folder} was written and kept, but uploading it to {repo_id} failed: "
            f"{_first_line(str(error)) or type(error).__name__}") from None


def convert_checkpoint(config_name: str, checkpoint: Optional[Union[str, Path]] = None,
                       output_dir: Union[str, Path] = "mask_rcnn_hf", push_to_hub: Optional[str] = None,
                       class_names: Optional[Sequence[str]] = None,
                       cache_dir: Optional[Union[str, Path]] = None, allow_hash_mismatch: bool = False,
                       widget_outputs: bool = False) -> Path:
    """Convert an MMDetection Mask R-CNN checkpoint into a Hub folder and return the folder's path.

    Args:
        config_name: one of the 21 zoo config names (aliases and a `.py` suffix accepted).
        checkpoint: local path or http(s)/file URL; None downloads the official zoo file (sha256-checked).
        output_dir: folder to write into; only the converter's own files there are replaced, everything
            else (e.g. a repository checkout around them) is kept.
        push_to_hub: Hub repo id to upload the folder to (needs a token; checked before converting).
        class_names: class names to use instead of the checkpoint meta / COCO default.
        cache_dir: download cache (default `default_cache_dir()`).
        allow_hash_mismatch: convert an official zoo file whose sha256 does not match the prefix in its name
            (warning instead of an error); only for a file whose published hash is known to be wrong.
        widget_outputs: put the converted weights' own answers (the folder's handler.py on the card's widget
            images) into the card's widget examples; without it the examples carry no outputs. The CLI does it.

    Raises:
        ConversionError: with a sentence saying what is wrong; nothing is written in that case.
    """
    config_name = resolve_config_name(config_name)
    output_dir = Path(output_dir).expanduser().resolve()
    token = _require_hub_token() if push_to_hub else None
    _check_output_dir(output_dir)
    checkpoint_path = fetch_checkpoint(config_name, checkpoint, cache_dir, allow_hash_mismatch)
    state_dict, meta = load_mmdet_checkpoint(checkpoint_path)
    prepared = prepare_conversion(config_name, state_dict, meta, class_names)
    del state_dict
    official = class_names is None and _zoo_entry_for_file_name(checkpoint_path.name) is ZOO[config_name]
    card = model_card_text(prepared, config_name, checkpoint_path, official)

    staging: Optional[Path] = None
    created_output_dir = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        # staged inside the output folder: the final per-file moves are atomic renames on one file system
        staging = Path(tempfile.mkdtemp(prefix=".convert-partial-", dir=output_dir))
        write_hf_folder(prepared, staging, card=card)
        _publish_files(staging, output_dir)
    except OSError as error:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if created_output_dir and output_dir.is_dir() and not any(output_dir.iterdir()):
            output_dir.rmdir()
        raise ConversionError(
            f"Writing {output_dir} failed ({error.strerror or error}); the checkpoint itself is valid, and no "
            "partial file was left behind.") from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Wrote %s (%d tensors, %d classes) from %s", output_dir, len(prepared.hf_state_dict),
                prepared.config.num_labels, checkpoint_path)
    if widget_outputs:
        logger.info("Computing the card's widget outputs with the converted weights (%s's handler.py)", output_dir)
        hub_folder.add_widget_outputs(output_dir)
    if push_to_hub:
        push_folder_to_hub(output_dir, push_to_hub, token, config_name)
        logger.info("Uploaded %s to https://huggingface.co/%s", output_dir, push_to_hub)
    return output_dir


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Convert an MMDetection Mask R-CNN checkpoint into a transformers custom-code Hub folder.")
    parser.add_argument("--config", required=True,
                        help="zoo config name, e.g. mask-rcnn_r50_fpn_1x_coco (metafile names and '.py' accepted)")
    parser.add_argument("--checkpoint", default=None,
                        help="local .pth path or http(s)/file URL (default: download the official zoo checkpoint)")
    parser.add_argument("--output-dir", required=True, help="folder to write (replaces a previous conversion)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID",
                        help="also upload the folder to this Hub model repo (needs a token)")
    parser.add_argument("--class-names", default=None,
                        help="class names instead of the checkpoint's: a comma-separated list or a text file with "
                             "one name per line")
    parser.add_argument("--no-widget-outputs", dest="widget_outputs", action="store_false",
                        help="leave the card's widget examples without outputs (by default they are computed with "
                             "the converted weights, one forward pass per example image)")
    parser.add_argument("--cache-dir", default=None,
                        help=f"download cache (default ${CACHE_DIR_ENV} or ~/.cache/mask_rcnn_hub)")
    parser.add_argument(ALLOW_HASH_MISMATCH_FLAG, action="store_true",
                        help="convert an official zoo file even though its sha256 does not start with the 8 hex "
                             "digits in its name (a warning instead of an error); only for a file whose published "
                             "hash is known to be wrong")
    parser.add_argument("--onnx", action="store_true",
                        help="also write model.onnx into the output folder (export_onnx.py: dynamic batch and image "
                             "size, validated against PyTorch)")
    return parser


def _parse_class_names(value: str) -> List[str]:
    """`--class-names`: a text file with one name per line, or a comma-separated list."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
    else:
        names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ConversionError(f"--class-names {value!r} contains no class names.")
    return names


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: returns 0 on success, 1 on a conversion error (one message on stderr, no traceback)."""
    arguments = build_argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        class_names = _parse_class_names(arguments.class_names) if arguments.class_names else None
        output = convert_checkpoint(arguments.config, arguments.checkpoint, arguments.output_dir,
                                    arguments.push_to_hub, class_names=class_names, cache_dir=arguments.cache_dir,
                                    allow_hash_mismatch=arguments.allow_hash_mismatch,
                                    widget_outputs=arguments.widget_outputs)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if arguments.onnx:  # after the push, if any: model.onnx stays a local deployment artefact
        export_main = importlib.import_module("export_onnx").main
        if export_main(["--model-dir", str(output)]) != 0:
            return 1
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
