# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The procedural fixture images of tests/fixtures/images (no downloads): photo-like scenes and the odd decode
paths (grayscale, RGBA, palette, 16-bit, EXIF-rotated JPEG, tiny, wide, large). numpy, PIL and OpenCV only.

    /work/venv-mmdet-sys/bin/python tools/make_golden.py --images     # redraws them (pixels may change!)

`make_images(output_dir)` draws them into another folder, e.g. to check that they still reproduce bit for bit.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.golden import IMAGES_DIR  # noqa: E402


def photo_like(width: int, height: int, seed: int, n_shapes: int = 40, noise: float = 3.0) -> np.ndarray:
    """RGB uint8 photo-like scene: sky/ground gradients, colour fields, shapes, stripes, shading, noise."""
    import cv2
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.Generator(np.random.PCG64(seed))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.35, 0.6)
    sky_top, sky_bottom = rng.uniform(60, 255, 3), rng.uniform(60, 255, 3)
    ground_top, ground_bottom = rng.uniform(20, 200, 3), rng.uniform(20, 200, 3)
    t_sky = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    t_ground = np.clip((yy - horizon) / max(height - horizon, 1), 0, 1)[..., None]
    img = np.where((yy < horizon)[..., None], sky_top * (1 - t_sky) + sky_bottom * t_sky,
                   ground_top * (1 - t_ground) + ground_bottom * t_ground)
    for cell in (max(width, height) / 6, max(width, height) / 20):
        grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
        field = rng.normal(0, 18, (grid_h, grid_w, 3)).astype(np.float32)
        img = img + cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    diag = (width * width + height * height) ** 0.5
    for _ in range(n_shapes):
        size = diag * np.exp(rng.uniform(np.log(0.015), np.log(0.35)))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        aspect = np.exp(rng.uniform(-0.8, 0.8))
        half_w, half_h = size * aspect ** 0.5 / 2, size / aspect ** 0.5 / 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(0.4, 1.0, n)
            draw.polygon([(cx + half_w * r * np.cos(a), cy + half_h * r * np.sin(a)) for a, r in zip(angles, radii)],
                         fill=colour)
        else:  # striped patch
            stencil = Image.new("L", pil.size, 0)
            stencil_draw = ImageDraw.Draw(stencil)
            (stencil_draw.ellipse if rng.random() < 0.5 else stencil_draw.rectangle)(box, fill=255)
            period, theta = rng.uniform(4, 30), rng.uniform(0, np.pi)
            stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0
            texture = np.where(stripes[..., None], np.array(colour), rng.integers(0, 256, 3)).astype(np.uint8)
            pil.paste(Image.fromarray(texture), (0, 0), stencil)
    arr = np.asarray(pil.filter(ImageFilter.GaussianBlur(0.8))).astype(np.float32)
    light_x, light_y = rng.uniform(0, width), rng.uniform(0, height)
    shade = 1.0 - 0.35 * np.sqrt((xx - light_x) ** 2 + (yy - light_y) ** 2) / diag
    arr = arr * shade[..., None]
    if noise > 0:
        arr = arr + rng.normal(0, noise, arr.shape)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def _exif_with_orientation(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def make_images(output_dir: Optional[str] = None) -> Dict[str, dict]:
    """Draw all fixture images into `output_dir` (default tests/fixtures/images); returns {file name: description}."""
    import cv2
    from PIL import Image

    output_dir = IMAGES_DIR if output_dir is None else output_dir
    os.makedirs(output_dir, exist_ok=True)
    described: Dict[str, dict] = {}

    def save_png(name: str, image: "Image.Image", what: str) -> None:
        image.save(os.path.join(output_dir, name), "PNG", compress_level=9)
        described[name] = {"what": what, "pil_mode": image.mode, "size_wh": list(image.size)}

    save_png("photo_640x480.png", Image.fromarray(photo_like(640, 480, seed=1)), "RGB photo-like, 640x480 (WxH)")
    save_png("gray_500x375.png", Image.fromarray(photo_like(500, 375, seed=2)).convert("L"),
             "8-bit grayscale (mode L); cv2 IMREAD_COLOR replicates it to 3 channels")
    save_png("portrait_427x640.png", Image.fromarray(photo_like(427, 640, seed=3)), "RGB portrait 427x640 (WxH)")
    save_png("wide_2000x500.png", Image.fromarray(photo_like(2000, 500, seed=4, n_shapes=60, noise=1.5)),
             "RGB very wide 2000x500: the long side limits the resize (1333x333)")
    save_png("large_2400x1800.png", Image.fromarray(photo_like(2400, 1800, seed=5, n_shapes=80, noise=0.0)),
             "RGB large 2400x1800: downscaled to 1067x800")
    save_png("tiny_97x61.png", Image.fromarray(photo_like(97, 61, seed=10, n_shapes=8, noise=2.0)),
             "RGB tiny 97x61 with odd sizes: upscaled ~13x to 1272x800")

    rgb = photo_like(480, 360, seed=6)
    rng = np.random.Generator(np.random.PCG64(60))
    alpha = np.clip(np.linspace(0, 400, 480)[None, :] + rng.normal(0, 10, (360, 480)), 0, 255).astype(np.uint8)
    alpha[:, :60] = 0  # fully transparent strip whose colour is still non-zero (cv2 drops alpha, no compositing)
    save_png("rgba_480x360.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
             "RGBA with alpha gradient and a fully transparent strip; cv2 drops alpha")

    palette = Image.fromarray(photo_like(400, 300, seed=7)).quantize(colors=48, method=Image.Quantize.MEDIANCUT,
                                                                      dither=Image.Dither.NONE)
    save_png("palette_400x300.png", palette, "palette (mode P, 48 colours); cv2 expands it to BGR")

    low = photo_like(320, 240, seed=8).astype(np.uint16)
    rng = np.random.Generator(np.random.PCG64(80))
    deep = (low * 257 + rng.integers(0, 256, low.shape)).clip(0, 65535).astype(np.uint16)  # low byte random
    name = "deep16_320x240.png"
    cv2.imwrite(os.path.join(output_dir, name), deep[..., ::-1].copy())  # cv2 writes BGR order -> RGB file
    described[name] = {"what": "16-bit RGB PNG (48 bpp) with random low bytes; cv2 IMREAD_COLOR keeps value >> 8",
                       "pil_mode": "RGB;16 (PIL cannot open 16-bit RGB losslessly)", "size_wh": [320, 240]}

    stored = photo_like(480, 320, seed=9)  # stored landscape; orientation 6 -> displayed 320x480 portrait
    name = "exif_rot6_480x320.jpg"
    Image.fromarray(stored).save(os.path.join(output_dir, name), "JPEG", quality=92, subsampling=0,
                                 exif=_exif_with_orientation(6))
    described[name] = {"what": "baseline JPEG 480x320 stored, EXIF orientation 6 (rotate 90 CW): cv2 decodes "
                               "320x480... see README for the measured decode", "pil_mode": "RGB",
                       "size_wh": [480, 320]}
    return described


def image_files() -> List[str]:
    """File names of the fixture images, sorted."""
    return sorted(f for f in os.listdir(IMAGES_DIR) if f.lower().endswith((".png", ".jpg", ".jpeg")))


def stem_of(file_name: str) -> str:
    """A fixture image's stem: the name its goldens and preprocessed inputs are stored under."""
    return os.path.splitext(file_name)[0]

