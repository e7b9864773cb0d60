"""ONNX export (export_onnx.py) and the torch-free runtime (onnx_inference_mask_rcnn.py) against the PyTorch path.

Each fixture backbone is converted from its synthetic checkpoint with lean settings (images at most 300x200, 200
proposals, 20 detections) and exported once per session. Agreement bounds: onnxruntime's MLAS convolutions round
differently from PyTorch's oneDNN ones (as PyTorch's own native convolutions do, by as much: docs/export.md,
tools/onnx_agreement.py --kernel-spread; keeping the batch norms unfolded does not help, tools/onnx_rounding.py),
and the synthetic weights amplify rounding ~40x over trained weights, so
the ONNX path is held to the fixtures' noise floor band, as the fused PyTorch path is (`parity.fast_mode_bounds`,
factor 2.5; at least the issue's 0.01 px / 1e-4 / 0.999), with at most 2 detections per image without a partner
(decisions at the score threshold, NMS IoU and caps flip). Exactly tied scores (sigmoid saturates at 1.0) are ordered
by index in ONNX and by PyTorch's unstable sort in the model; `MaskRCNNOnnxModule(tie_order="pytorch")` shows the
exported algorithm is otherwise the model's, bit for bit.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

import export_onnx  # noqa: E402
from image_processing_mask_rcnn import MaskRCNNImageProcessor, paste_masks  # noqa: E402
from image_utils_mask_rcnn import paste_mask_window  # noqa: E402
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation  # noqa: E402
from onnx_agreement import (FIXTURE_VARIANTS, compare, pytorch_detections, runtime_detections,  # noqa: E402
                            synthetic_variant_folder)
from onnx_inference_mask_rcnn import (MaskRCNNOnnxRuntime, OnnxModelError, check_onnxruntime_version)  # noqa: E402
from parity import fast_mode_bounds  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
AGREEMENT_IMAGES = ("gray_500x375.png", "photo_640x480.png", "portrait_427x640.png", "tiny_97x61.png")
NOISE_FLOOR_FACTOR = 2.5
MAX_UNMATCHED_PER_IMAGE = 2


class Exported:
    """A converted folder, its exported model.onnx, the PyTorch model, processor and ONNX runtime."""

    def __init__(self, folder: Path, variant: str):
        self.folder, self.variant = folder, variant
        export_onnx.export_onnx(folder)
        self.model = MaskRCNNForInstanceSegmentation.from_pretrained(str(folder)).eval()
        self.processor = MaskRCNNImageProcessor.from_pretrained(str(folder))
        self.runtime = MaskRCNNOnnxRuntime(folder / "model.onnx")


_EXPORTS = {}


@pytest.fixture(scope="module")
def exports_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-exports")


def exported(exports_dir, variant: str) -> Exported:
    if variant not in _EXPORTS:
        _EXPORTS[variant] = Exported(synthetic_variant_folder(exports_dir, variant), variant)
    return _EXPORTS[variant]


@pytest.fixture(scope="module")
def r50(exports_dir):
    return exported(exports_dir, FIXTURE_VARIANTS[0])


def assert_agrees(variant, expected, actual):
    stats = compare(expected, actual)
    bounds = fast_mode_bounds(variant, factor=NOISE_FLOOR_FACTOR)
    unmatched = (stats["pytorch"] - stats["matched"]) + (stats["onnx"] - stats["matched"])
    assert unmatched <= MAX_UNMATCHED_PER_IMAGE, stats
    assert stats["max_box_error"] <= bounds["max_box_error"], (stats, bounds)
    assert stats["max_score_error"] <= bounds["max_score_error"], (stats, bounds)
    assert stats["median_mask_iou"] >= bounds["median_mask_iou"], (stats, bounds)
    return stats


# ---------------------------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", FIXTURE_VARIANTS)
def test_every_backbone_agrees_with_pytorch_on_the_fixtures(exports_dir, variant):
    case = exported(exports_dir, variant)
    for name in AGREEMENT_IMAGES:
        path = str(IMAGES / name)
        expected = pytorch_detections(case.model, case.processor, [path])[0]
        assert len(expected["scores"]) > 0, f"{variant}/{name}: no detection to compare"
        assert_agrees(variant, expected, runtime_detections(case.runtime, [path])[0])


@pytest.mark.parametrize("variant", FIXTURE_VARIANTS)
def test_exported_algorithm_is_the_models_with_pytorch_tie_order(exports_dir, variant):
    case = exported(exports_dir, variant)
    inputs = export_onnx.image_inputs(case.folder, [str(IMAGES / "photo_640x480.png")])
    expected = export_onnx.pytorch_reference(case.model, inputs)
    actual = export_onnx.export_forward_reference(case.model, inputs, tie_order="pytorch")
    assert len(expected["scores"]) > 0
    for name in export_onnx.OUTPUT_NAMES:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def test_graph_contract_names_types_and_symbolic_sizes(r50):
    model = onnx.load(str(r50.folder / "model.onnx"))
    onnx.checker.check_model(model)
    assert next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) == 17
    inputs = {value.name: value for value in model.graph.input}
    assert list(inputs) == ["pixel_values", "image_sizes"]
    pixel_dims = inputs["pixel_values"].type.tensor_type.shape.dim
    assert [dim.dim_param or dim.dim_value for dim in pixel_dims] == ["batch_size", 3, "height", "width"]
    outputs = [value.name for value in model.graph.output]
    assert outputs == ["boxes", "scores", "labels", "mask_probs", "batch_index"]
    operators = {node.op_type for node in model.graph.node}
    assert {"NonMaxSuppression", "RoiAlign", "TopK"} <= operators
    roi_aligns = [node for node in model.graph.node if node.op_type == "RoiAlign"]
    modes = {attribute.s for node in roi_aligns for attribute in node.attribute
             if attribute.name == "coordinate_transformation_mode"}
    assert modes == {b"half_pixel"}


def test_batch_norms_are_folded_by_default_and_kept_on_request(r50, tmp_path):
    """The exporter folds each batch norm into its convolution (docs/export.md: keeping them does not bring
    onnxruntime closer to PyTorch); `fold_batch_norms=False` keeps one BatchNormalization per batch-norm module."""
    batch_norms = sum(isinstance(module, torch.nn.BatchNorm2d) for module in r50.model.modules())
    folded = [node.op_type for node in onnx.load(str(r50.folder / "model.onnx")).graph.node]
    assert batch_norms > 0 and "BatchNormalization" not in folded
    kept_path = tmp_path / "kept.onnx"
    export_onnx.trace_to_onnx(r50.model, kept_path, fold_batch_norms=False)
    kept = [node.op_type for node in onnx.load(str(kept_path)).graph.node]
    assert kept.count("BatchNormalization") == batch_norms
    assert kept.count("Conv") == folded.count("Conv")


def test_a_padded_batch_of_different_sizes_equals_pytorchs_batch(r50):
    paths = [str(IMAGES / name) for name in ("photo_640x480.png", "portrait_427x640.png", "wide_2000x500.png")]
    expected = pytorch_detections(r50.model, r50.processor, paths)
    actual = runtime_detections(r50.runtime, paths)
    assert len(actual) == 3
    for expected_image, actual_image in zip(expected, actual):
        assert_agrees(r50.variant, expected_image, actual_image)


@pytest.mark.parametrize("shape", [(48, 900), (900, 48)], ids=["very-wide", "very-tall"])
def test_very_wide_and_very_tall_images(r50, shape):
    rng = np.random.default_rng(7)
    image = (np.linspace(0, 255, shape[1])[None, :, None] * 0.5 + rng.integers(0, 128, shape + (3,))).astype(np.uint8)
    expected = pytorch_detections(r50.model, r50.processor, [image])[0]
    actual = runtime_detections(r50.runtime, [image])[0]
    assert actual["masks"].shape[1:] == shape
    assert_agrees(r50.variant, expected, actual)


def test_exported_at_one_size_runs_at_others(r50):
    traced_height, traced_width = export_onnx.VALIDATION_IMAGE_SIZE
    for height, width in ((96, 160), (256, 64), (416, 608)):
        assert (height, width) != (traced_height, traced_width)
        rng = np.random.default_rng(height)
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        inputs = export_onnx.image_inputs(r50.folder, [image])
        outputs = r50.runtime.forward(inputs["pixel_values"], inputs["image_sizes"])
        assert outputs["mask_probs"].shape[1:] == (28, 28)
        assert_agrees(r50.variant, pytorch_detections(r50.model, r50.processor, [image])[0],
                      runtime_detections(r50.runtime, [image])[0])


def test_images_without_detections(exports_dir):
    folder = synthetic_variant_folder(exports_dir / "no-detections", FIXTURE_VARIANTS[0],
                                      config_changes={"score_threshold": 1.0})  # `score > 1.0` never holds
    export_onnx.export_onnx(folder)
    runtime = MaskRCNNOnnxRuntime(folder / "model.onnx")
    batch = runtime.preprocess([str(IMAGES / "photo_640x480.png"), str(IMAGES / "tiny_97x61.png")])
    outputs = runtime.forward(batch["pixel_values"], batch["image_sizes"])
    assert outputs["boxes"].shape == (0, 4) and outputs["mask_probs"].shape == (0, 28, 28)
    assert outputs["labels"].dtype == np.int64 and outputs["batch_index"].dtype == np.int64
    assert runtime([str(IMAGES / "photo_640x480.png")], threshold=0.0) == [[]]
    model = MaskRCNNForInstanceSegmentation.from_pretrained(str(folder)).eval()
    processor = MaskRCNNImageProcessor.from_pretrained(str(folder))
    assert len(pytorch_detections(model, processor, [str(IMAGES / "photo_640x480.png")])[0]["scores"]) == 0


# ---------------------------------------------------------------------------------------------------------------
# The torch-free runtime: same pixels, same pasting, pipeline format, no torch
# ---------------------------------------------------------------------------------------------------------------
def test_runtime_preprocessing_gives_the_processors_pixels(r50):
    paths = sorted(str(path) for path in IMAGES.iterdir())
    for batch in [[path] for path in paths] + [paths[:3]]:
        expected = r50.processor(images=batch, return_tensors="pt")
        actual = r50.runtime.preprocess(batch)
        for name in ("pixel_values", "image_sizes", "original_sizes", "scale_factors"):
            np.testing.assert_array_equal(actual[name], expected[name].numpy(), err_msg=f"{name} of {batch}")


def test_numpy_paste_equals_the_processors_grid_sample_paste():
    rng = np.random.default_rng(3)
    height, width = 70, 90
    boxes = [[10.3, 5.7, 60.2, 40.9], [-8.5, -3.2, 20.1, 15.5], [80.4, 60.6, 120.0, 95.0], [30.0, 30.0, 30.0, 50.0],
             [0.0, 0.0, 90.0, 70.0], [44.44, 12.5, 44.9, 13.1], [-50.0, -50.0, -10.0, -10.0]]
    boxes += [sorted(rng.uniform(-20, 100, 2)) + sorted(rng.uniform(-20, 80, 2)) for _ in range(40)]
    boxes = np.asarray([[b[0], b[2], b[1], b[3]] if len(b) == 4 and i >= 7 else b for i, b in enumerate(boxes)],
                       dtype=np.float32)
    probs = rng.random((len(boxes), 28, 28), dtype=np.float32)
    for threshold in (0.5, 0.3):
        expected = paste_masks(torch.from_numpy(probs), torch.from_numpy(boxes), height, width, threshold).numpy()
        for index, box in enumerate(boxes):
            actual = np.zeros((height, width), dtype=bool)
            pasted = paste_mask_window(probs[index], box, height, width, threshold)
            if pasted is not None:
                actual[pasted[0], pasted[1]] = pasted[2]
            np.testing.assert_array_equal(actual, expected[index], err_msg=f"box {box}")


def test_runtime_output_is_the_pipelines_format(r50):
    annotations = r50.runtime(str(IMAGES / "photo_640x480.png"), threshold=0.0)
    assert annotations and [a["score"] for a in annotations] == sorted((a["score"] for a in annotations), reverse=True)
    first = annotations[0]
    assert set(first) == {"score", "label", "box", "mask"}
    assert set(first["box"]) == {"xmin", "ymin", "xmax", "ymax"} and isinstance(first["box"]["xmin"], int)
    assert first["mask"].mode == "L" and first["mask"].size == (640, 480)
    assert first["label"] in r50.model.config.id2label.values()
    strict = r50.runtime(str(IMAGES / "photo_640x480.png"), threshold=0.5, mask_threshold=0.7)
    assert all(a["score"] >= 0.5 for a in strict) and len(strict) <= len(annotations)
    rle = r50.runtime(str(IMAGES / "photo_640x480.png"), threshold=0.0, return_rle=True)
    from pycocotools import mask as coco_mask

    for with_rle, with_png in zip(rle, annotations):
        decoded = coco_mask.decode({"size": with_rle["mask"]["size"], "counts": with_rle["mask"]["counts"]})
        np.testing.assert_array_equal(decoded.astype(bool), np.asarray(with_png["mask"]) > 0)


def test_runtime_works_where_torch_cannot_be_imported(r50, tmp_path):
    """A subprocess whose import system refuses torch (and everything built on it), started from a neutral folder
    with only the runtime's two files beside the model: it must give the in-process runtime's annotations."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "transformers"):
                    raise ImportError(f"{name} is blocked: this process must run without torch")
        sys.meta_path.insert(0, NoTorch())
    """))
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    for name in ("onnx_inference_mask_rcnn.py", "image_utils_mask_rcnn.py"):
        (deploy / name).write_text((REPO_ROOT / name).read_text())
    (deploy / "model.onnx").symlink_to(r50.folder / "model.onnx")
    script = textwrap.dedent(f"""
        import json, sys
        try:
            import torch
        except ImportError:
            pass
        else:
            sys.exit("torch was importable")
        from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime
        runtime = MaskRCNNOnnxRuntime("model.onnx")
        results = runtime([{str(IMAGES / "photo_640x480.png")!r}], threshold=0.0, return_rle=True)[0]
        assert "torch" not in sys.modules
        print(json.dumps([[a["score"], a["label"], a["box"], a["mask"]["counts"]] for a in results]))
    """)
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment["PYTHONPATH"] = os.pathsep.join([str(hook), str(deploy)])
    completed = subprocess.run([sys.executable, "-c", script], cwd=deploy, env=environment, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    in_process = r50.runtime([str(IMAGES / "photo_640x480.png")], threshold=0.0, return_rle=True)[0]
    assert json.loads(completed.stdout) == [[a["score"], a["label"], a["box"], a["mask"]["counts"]]
                                            for a in in_process]


# ---------------------------------------------------------------------------------------------------------------
# Errors: clear messages, no partial file
# ---------------------------------------------------------------------------------------------------------------
def test_exporting_a_folder_without_weights_fails_clearly(r50, tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_text((r50.folder / name).read_text())
    with pytest.raises(export_onnx.ExportError, match="no model.safetensors"):
        export_onnx.export_onnx(folder)
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "preprocessor_config.json"]
    assert export_onnx.main(["--model-dir", str(folder)]) == 1


def test_an_unwritable_output_path_fails_clearly(r50, tmp_path):
    with pytest.raises(export_onnx.ExportError, match="does not exist"):
        export_onnx.export_onnx(r50.folder, tmp_path / "missing" / "model.onnx", model=r50.model)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # root may write into read-only folders; /proc refuses new files to everyone
        target = Path("/proc") if os.access(locked, os.W_OK) else locked
        if not target.is_dir():
            pytest.skip("no folder this user cannot write into")
        with pytest.raises(export_onnx.ExportError, match="writable"):
            export_onnx.export_onnx(r50.folder, target / "model.onnx", model=r50.model)
        assert not [path for path in target.iterdir() if path.name.startswith((".model.onnx", "model.onnx"))]
    finally:
        locked.chmod(0o700)


def test_a_graph_that_disagrees_with_pytorch_is_refused_and_removed(r50, tmp_path, monkeypatch):
    reference = export_onnx.export_forward_reference

    def shifted_reference(model, inputs, tie_order="onnx"):
        values = reference(model, inputs, tie_order)
        values["boxes"] = values["boxes"] + 3.0  # what a wrong coordinate mode or level would look like
        return values

    monkeypatch.setattr(export_onnx, "export_forward_reference", shifted_reference)
    output = tmp_path / "model.onnx"
    with pytest.raises(export_onnx.ExportError, match="disagrees with the PyTorch model"):
        export_onnx.export_onnx(r50.folder, output, model=r50.model,
                                validation_image=str(IMAGES / "photo_640x480.png"))
    assert list(tmp_path.iterdir()) == []


def test_an_onnxruntime_too_old_for_the_opset_is_named():
    with pytest.raises(OnnxModelError, match=r"onnxruntime 1\.12\.1 is too old .*opset 17.*>= 1\.13"):
        check_onnxruntime_version("1.12.1")
    check_onnxruntime_version(onnxruntime.__version__)
    check_onnxruntime_version("1.13.0")


def test_a_model_stamped_with_an_unsupported_opset_is_named(r50, tmp_path):
    model = onnx.load(str(r50.folder / "model.onnx"))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    path = tmp_path / "future.onnx"
    onnx.save(model, str(path))
    with pytest.raises(OnnxModelError, match="opset 99"):
        MaskRCNNOnnxRuntime(path)


def test_a_model_with_other_inputs_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["boxes"])], "other",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 3, "height", "width"])])
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(OnnxModelError, match=r"does not have the inputs and outputs .* It has inputs \[images"):
        MaskRCNNOnnxRuntime(path)
    with pytest.raises(OnnxModelError, match="does not exist"):
        MaskRCNNOnnxRuntime(tmp_path / "absent.onnx")


def test_the_converter_writes_model_onnx_with_the_onnx_flag(tmp_path):
    import convert_mmdet_checkpoint as convert
    from synthetic_weights import save_synthetic_checkpoint

    checkpoint = save_synthetic_checkpoint(str(tmp_path / "synthetic.pth"), FIXTURE_VARIANTS[0])
    output = tmp_path / "converted"
    assert convert.main(["--config", FIXTURE_VARIANTS[0], "--checkpoint", checkpoint, "--output-dir", str(output),
                         "--onnx"]) == 0
    assert (output / "model.safetensors").is_file() and (output / "model.onnx").is_file()
    assert not [path for path in output.iterdir() if ".partial" in path.name]
    runtime = MaskRCNNOnnxRuntime(output / "model.onnx")
    assert runtime.preprocessing["resize_scale"] == [1333, 800]
    assert runtime.id2label[0] == "person"
