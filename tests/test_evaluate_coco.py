"""tools/evaluate_coco.py on a tiny synthetic COCO dataset (polygon and RLE annotations).

Ground truth fed back as predictions must score AP 1.0 (box and mask); a shifted copy must score lower. One run
of the (synthetic, converted once per session) model checks the dataset plumbing: image ids, category ids, a
missing image file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import evaluate_coco
from mask_rcnn_batch.model import load_model_and_processor
from mask_rcnn_batch.records import COCO_CATEGORIES, stable_image_id
from test_segment_cli import FIXTURE_PHOTO, converted_synthetic_model

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

WIDTH, HEIGHT = 300, 200
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
# image id -> file name; ids deliberately not in file order
IMAGES = {11: "img_a.png", 5: "img_b.png", 42: "sub/img_c.png"}


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _ellipse(cx, cy, rx, ry) -> np.ndarray:
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1


def _annotations():
    """Per image: a rectangle and a triangle as polygons, an ellipse as compressed RLE."""
    annotations, next_id = [], 1
    for offset, image_id in enumerate(sorted(IMAGES)):
        shift = 15 * offset
        polygons = [
            (1, [[20 + shift, 30, 110 + shift, 30, 110 + shift, 150, 20 + shift, 150]]),
            (3, [[150, 40 + shift, 260, 60 + shift, 180, 140 + shift]]),
        ]
        for category_id, polygon in polygons:
            rle = mask_utils.merge(mask_utils.frPyObjects(polygon, HEIGHT, WIDTH))
            annotations.append({"id": next_id, "image_id": image_id, "category_id": category_id,
                                "segmentation": polygon, "area": float(mask_utils.area(rle)),
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
            next_id += 1
        ellipse = _ellipse(220 - shift, 150, 45, 30)
        annotations.append({"id": next_id, "image_id": image_id, "category_id": 18, "segmentation": _rle(ellipse),
                            "area": float(ellipse.sum()),
                            "bbox": [float(v) for v in mask_utils.toBbox(mask_utils.encode(
                                np.asfortranarray(ellipse.astype(np.uint8))))], "iscrowd": 0})
        next_id += 1
    return annotations


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    data = {"images": [{"id": image_id, "file_name": name, "width": WIDTH, "height": HEIGHT}
                       for image_id, name in IMAGES.items()],
            "annotations": _annotations(), "categories": CATEGORIES}
    (root / "instances.json").write_text(json.dumps(data))
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    photo = Image.open(FIXTURE_PHOTO).convert("RGB")
    photo.resize((WIDTH, HEIGHT)).save(images / IMAGES[11])
    photo.transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize((WIDTH, HEIGHT)).save(images / IMAGES[5])
    # IMAGES[42] is deliberately missing on disk
    return root, data


def ground_truth_as_results(data, shift=0):
    """The annotations as COCO results with score 1.0 (RLE masks), optionally moved `shift` pixels right."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    results = []
    for annotation in data["annotations"]:
        mask = coco.annToMask(annotation).astype(bool)
        if shift:
            mask = np.roll(mask, shift, axis=1)
            mask[:, :shift] = False
        x, y, w, h = annotation["bbox"]
        results.append({"image_id": annotation["image_id"], "category_id": annotation["category_id"],
                        "bbox": [x + shift, y, w, h], "score": 1.0, "segmentation": _rle(mask)})
    return results


def evaluate_file(tmp_path, dataset, results, *extra):
    root, _ = dataset
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    arguments = evaluate_coco.build_argument_parser().parse_args(
        ["--predictions", str(path), "--annotations", str(root / "instances.json"), *extra])
    stats, failures = evaluate_coco.run(arguments)
    assert failures == []
    return stats


def test_ground_truth_as_predictions_scores_ap_one(dataset, tmp_path):
    stats = evaluate_file(tmp_path, dataset, ground_truth_as_results(dataset[1]))
    assert set(stats) == {"bbox", "segm"}
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)
    assert stats["bbox"][1] == pytest.approx(1.0) and stats["segm"][2] == pytest.approx(1.0)


def test_shifted_predictions_score_lower(dataset, tmp_path):
    stats = evaluate_file(tmp_path, dataset, ground_truth_as_results(dataset[1], shift=12))
    assert 0.0 < stats["bbox"][0] < 0.9 and 0.0 < stats["segm"][0] < 0.9
    perfect = evaluate_file(tmp_path, dataset, ground_truth_as_results(dataset[1]))
    assert stats["segm"][0] < perfect["segm"][0] and stats["bbox"][0] < perfect["bbox"][0]


def test_segment_py_results_are_matched_by_file_name(dataset, tmp_path):
    results = ground_truth_as_results(dataset[1])
    for record in results:  # segment.py writes hashed ids and the file name
        record["file_name"] = IMAGES[record["image_id"]]
        record["image_id"] = stable_image_id(record["file_name"])
    results.append({**results[0], "file_name": "unknown.png", "image_id": 3})
    stats = evaluate_file(tmp_path, dataset, results)
    assert stats["bbox"][0] == pytest.approx(1.0) and stats["segm"][0] == pytest.approx(1.0)


def test_max_images_restricts_the_evaluated_images(dataset, tmp_path, capsys):
    only_first = [r for r in ground_truth_as_results(dataset[1]) if r["image_id"] == 5]
    stats = evaluate_file(tmp_path, dataset, only_first, "--max-images", "1")
    assert stats["segm"][0] == pytest.approx(1.0)
    stats = evaluate_file(tmp_path, dataset, only_first)
    assert stats["segm"][0] < 0.5
    assert "cover 1 of the 3 evaluated images" in capsys.readouterr().err


def test_main_prints_summaries_and_rejects_bad_arguments(dataset, tmp_path, capsys):
    root, data = dataset
    path = tmp_path / "results.json"
    path.write_text(json.dumps(ground_truth_as_results(data)))
    assert evaluate_coco.main(["--predictions", str(path), "--annotations", str(root / "instances.json")]) == 0
    out = capsys.readouterr().out
    assert "bbox AP 100.0 | AP50 100.0" in out and "segm AP 100.0" in out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in out
    assert evaluate_coco.main(["--annotations", str(root / "instances.json")]) == 2
    assert evaluate_coco.main(["--model", "x", "--annotations", str(root / "instances.json")]) == 2
    assert evaluate_coco.main(["--predictions", str(path), "--annotations", str(tmp_path / "nope.json")]) == 2
    assert "is not a file" in capsys.readouterr().err


def test_dataset_category_ids():
    coco80 = {index: name for index, (_, name) in enumerate(COCO_CATEGORIES)}
    official = evaluate_coco.dataset_category_ids(coco80, CATEGORIES)
    assert official[0] == 1 and official[2] == 3 and official[79] == 90
    renumbered = [{"id": index + 1, "name": name} for index, name in coco80.items()]  # contiguous 1..80
    assert evaluate_coco.dataset_category_ids(coco80, renumbered)[79] == 80
    custom = {0: "cat", 1: "dog"}
    assert evaluate_coco.dataset_category_ids(custom, [{"id": 7, "name": "dog"}, {"id": 9, "name": "cat"}]) == {
        0: 9, 1: 7}
    assert evaluate_coco.dataset_category_ids(custom, [{"id": 4, "name": "x"}, {"id": 2, "name": "y"}]) == {
        0: 2, 1: 4}
    with pytest.raises(evaluate_coco.EvaluationError):
        evaluate_coco.dataset_category_ids(custom, [{"id": 4, "name": "x"}])


def test_model_run_over_the_dataset(dataset, tmp_path, tmp_path_factory, monkeypatch, capsys):
    root, data = dataset
    model_dir = converted_synthetic_model(tmp_path_factory)
    loaded = load_model_and_processor(str(model_dir))
    calls, raw_counts = [], []
    forward = type(loaded[0]).forward.__get__(loaded[0])

    def counting_forward(pixel_values, **kwargs):
        calls.append(len(pixel_values))
        outputs = forward(pixel_values, **kwargs)
        raw_counts.extend(len(scores) for scores in outputs.scores)
        return outputs

    monkeypatch.setattr(loaded[0], "forward", counting_forward)
    monkeypatch.setattr(evaluate_coco, "load_model_and_processor", lambda *args, **kwargs: loaded)
    output = tmp_path / "predictions.json"
    code = evaluate_coco.main(["--model", str(model_dir), "--images", str(root / "images"), "--annotations",
                               str(root / "instances.json"), "--batch-size", "2", "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 1  # sub/img_c.png is missing
    assert "sub/img_c.png" in captured.err and "left out of the evaluation" in captured.err
    assert calls == [2]  # the two readable images in one forward pass
    records = json.loads(output.read_text())
    assert records and {r["image_id"] for r in records} == {5, 11}
    assert {r["category_id"] for r in records} <= {category_id for category_id, _ in COCO_CATEGORIES}
    assert all(r["segmentation"]["size"] == [HEIGHT, WIDTH] for r in records)
    # threshold 0: every detection the model returns is evaluated
    assert sorted(sum(r["image_id"] == image_id for r in records) for image_id in (5, 11)) == sorted(raw_counts)
    assert "bbox AP" in captured.out and "segm AP" in captured.out
