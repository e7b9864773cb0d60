#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""A small generated instance-segmentation dataset in COCO format: coloured shapes on textured backgrounds.

    python tools/make_shapes_dataset.py OUTPUT_DIR [--train 64] [--val 16] [--size 128] [--seed 0]

Writes OUTPUT_DIR/{train,val}/*.png and OUTPUT_DIR/{train,val}.json with three categories (ids 1 "disc",
2 "square", 3 "triangle"), 1..3 objects per image (they may overlap; later ones occlude earlier ones and the masks
are the visible parts), polygon segmentations for squares and triangles, compressed RLE for discs. Used by the
"it learns" fine-tuning test and as a quick end-to-end example of tools/finetune.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"}]


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a colour gradient with stripes and noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 200, 3)
    gradient = rng.uniform(-40, 40, 3)
    image = base + gradient * (xx[..., None] * rng.uniform(-1, 1) + yy[..., None] * rng.uniform(-1, 1))
    period, theta = rng.uniform(0.05, 0.2), rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)[..., None]
    image = image + stripes * rng.uniform(5, 20) + rng.normal(0, 6, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def shape_polygon(kind: int, cx: float, cy: float, radius: float, angle: float) -> List[Tuple[float, float]]:
    corners = 4 if kind == 2 else 3
    return [(cx + radius * np.cos(angle + 2 * np.pi * k / corners), cy + radius * np.sin(angle + 2 * np.pi * k / corners))
            for k in range(corners)]


def draw_image(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    """One image and its objects [{"category_id", "mask" (bool HxW), "polygon" or None}], occlusion applied."""
    canvas = Image.fromarray(textured_background(rng, size))
    objects: List[dict] = []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(1, 4))
        radius = rng.uniform(0.12, 0.25) * size
        cx, cy = rng.uniform(radius, size - radius, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        stencil = Image.new("L", (size, size), 0)
        if kind == 1:
            box = [cx - radius, cy - radius, cx + radius, cy + radius]
            ImageDraw.Draw(canvas).ellipse(box, fill=colour)
            ImageDraw.Draw(stencil).ellipse(box, fill=1)
            polygon = None
        else:
            polygon = shape_polygon(kind, cx, cy, radius, rng.uniform(0, 2 * np.pi))
            ImageDraw.Draw(canvas).polygon(polygon, fill=colour)
            ImageDraw.Draw(stencil).polygon(polygon, fill=1)
        mask = np.asarray(stencil, bool)
        for previous in objects:  # the new shape hides what it covers
            previous["mask"] &= ~mask
            previous["polygon"] = None  # an occluded shape is no longer its polygon: store it as RLE
        objects.append({"category_id": kind, "mask": mask, "polygon": polygon})
    return np.asarray(canvas), [obj for obj in objects if obj["mask"].sum() >= 20]


def coco_annotation(obj: dict, annotation_id: int, image_id: int) -> dict:
    from pycocotools import mask as coco_mask

    rows, cols = np.nonzero(obj["mask"])
    x1, y1 = float(cols.min()), float(rows.min())
    bbox = [x1, y1, float(cols.max()) + 1 - x1, float(rows.max()) + 1 - y1]
    if obj["polygon"] is not None:
        segmentation = [[float(round(v, 2)) for point in obj["polygon"] for v in point]]
    else:
        rle = coco_mask.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
        segmentation = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    return {"id": annotation_id, "image_id": image_id, "category_id": obj["category_id"], "bbox": bbox,
            "area": float(obj["mask"].sum()), "iscrowd": 0, "segmentation": segmentation}


def write_split(output_dir: str, split: str, count: int, size: int, rng: np.random.Generator) -> str:
    folder = os.path.join(output_dir, split)
    os.makedirs(folder, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = draw_image(rng, size)
        file_name = f"{index:05d}.png"
        Image.fromarray(image).save(os.path.join(folder, file_name))
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            annotations.append(coco_annotation(obj, len(annotations) + 1, image_id))
    path = os.path.join(output_dir, f"{split}.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, handle)
    return path


def make_dataset(output_dir: str, train: int = 64, val: int = 16, size: int = 128, seed: int = 0) -> Dict[str, str]:
    """Write both splits; returns {"train_images", "train_annotations", "val_images", "val_annotations"}."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return {
        "train_annotations": write_split(output_dir, "train", train, size, rng),
        "train_images": os.path.join(output_dir, "train"),
        "val_annotations": write_split(output_dir, "val", val, size, rng),
        "val_images": os.path.join(output_dir, "val"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(make_dataset(args.output_dir, args.train, args.val, args.size, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
