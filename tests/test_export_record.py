"""The export record (runs/exports.py): export.json read and written only as typed models, records of older
versions read as they were, and a tampered one a UserError naming the file and the field, without TensorFlow."""

import copy
import json
import re

import pytest

from mnist_keras.errors import UserError
from mnist_keras.runs.exports import read_export_record, read_labels, write_export_record, write_labels

PARITY = {"images": 2000, "agreement": 1.0, "keras_accuracy": 0.9, "export_accuracy": 0.9,
          "max_probability_difference": 1.5e-06, "file_bytes": 253_000, "latency_ms": 0.08,
          "bar": "top-1 agreement at least 99.9%", "passed": True}
ENTRY = {"format": "onnx", "quantize": None, "path": "model.onnx", "sha256": "ab" * 32, "status": "ok",
         "exported_at": "2026-11-26T02:55:56+0000", "test_images": {"dataset": "mnist", "source": "bundled"},
         "parity": PARITY, "versions": {"mnist-keras": "0.2.0", "onnx": "1.17.0"}}
RECORD = {"name": "tiny", "run": "/runs/tiny/1", "model": "/runs/tiny/1/model.keras", "model_sha256": "cd" * 32,
          "fit": None, "image_shape": [28, 28, 1], "class_names": [str(d) for d in range(10)],
          "input": {"name": "images", "dtype": "uint8", "shape": [None, 28, 28, 1]},
          "output": {"name": "probabilities", "dtype": "float32", "shape": [None, 10]}, "formats": {"onnx": ENTRY}}


def written(folder, record):
    (folder / "export.json").write_text(record if isinstance(record, str) else json.dumps(record))
    return folder


def changed(change):
    record = copy.deepcopy(RECORD)
    change(record)
    return record


def test_a_record_reads_and_writes_back_to_the_byte(tmp_path):
    record = read_export_record(written(tmp_path, RECORD))
    assert record.formats["onnx"].parity.agreement == 1.0 and record.upload_fit is None
    write_export_record(tmp_path, record)
    first = (tmp_path / "export.json").read_bytes()
    assert json.loads(first) == RECORD  # no `pending` while none is set
    write_export_record(tmp_path, read_export_record(tmp_path))
    assert (tmp_path / "export.json").read_bytes() == first


def test_records_of_older_versions_are_read(tmp_path):
    """mnist-keras 0.1 wrote no fit, no model_sha256 and no sha256 per entry; a colour model's uploads were
    stretched then."""
    def older(record):
        del record["fit"], record["model_sha256"], record["formats"]["onnx"]["sha256"]
        record["image_shape"], record["input"]["shape"] = [32, 32, 3], [None, 32, 32, 3]

    record = read_export_record(written(tmp_path, changed(older)))
    assert record.formats["onnx"].sha256 is None and record.model_sha256 is None
    assert record.upload_fit == "stretch"
    assert read_export_record(written(tmp_path, changed(lambda r: r.update(fit=None)))).upload_fit is None
    hand_made = {"name": "tiny", "image_shape": [28, 28, 1]}  # a SavedModel given a record by hand, for serve
    assert read_export_record(written(tmp_path, hand_made)).formats == {}


def test_a_crashed_exports_pending_entry_is_read(tmp_path):
    pending = {"scratch": ".partial-0123456789abcdef", "entry": ENTRY}
    record = read_export_record(written(tmp_path, changed(lambda r: r.update(formats={}, pending=pending))))
    assert record.pending.entry.key == "onnx" and record.formats == {}


TAMPERED = {  # id: (the record, the field the message names, what it says)
    "name a number": (changed(lambda r: r.update(name=7)), "name", "Input should be a valid string"),
    "image_shape of booleans": (changed(lambda r: r.update(image_shape=[True, True, True])), "image_shape.0",
                                "valid integer"),
    "image_shape of two": (changed(lambda r: r.update(image_shape=[28, 28])), "image_shape", "at least 3 items"),
    "class_names nested": (changed(lambda r: r.update(class_names=[["0"]])), "class_names.0", "valid string"),
    "fit a list": (changed(lambda r: r.update(fit=["pad"])), "fit", "fit must be null, stretch, crop or pad"),
    "an unknown field": (changed(lambda r: r.update(formats_v2={})), "formats_v2", "Extra inputs are not permitted"),
    "formats a list": (changed(lambda r: r.update(formats=[])), "formats", "valid dictionary"),
    "an unknown format entry": (changed(lambda r: r["formats"].update(tflite=ENTRY)), "formats.tflite",
                                "'tflite' is not an artifact of an export"),
    "an entry under another format's key": (changed(lambda r: r["formats"].update(litert=ENTRY)), "formats",
                                            "litert: holds the entry of onnx"),
    "an unknown format": (changed(lambda r: r["formats"]["onnx"].update(format="tflite")), "formats.onnx.format",
                          "Input should be"),
    "a quantized onnx": (changed(lambda r: r["formats"]["onnx"].update(quantize="int8")), "formats.onnx.quantize",
                         "only litert exports are quantized"),
    "a path outside": (changed(lambda r: r["formats"]["onnx"].update(path="../user")), "formats.onnx.path",
                       "is not this artifact's name"),
    "another artifact's path": (changed(lambda r: r["formats"]["onnx"].update(path="1")), "formats.onnx.path",
                                "is not this artifact's name"),
    "a sha256 not hex": (changed(lambda r: r["formats"]["onnx"].update(sha256="x" * 64)), "formats.onnx.sha256",
                         "should match pattern"),
    "parity figures as text": (changed(lambda r: r["formats"]["onnx"]["parity"].update(images="2000")),
                               "formats.onnx.parity.images", "valid integer"),
    "parity passed as 1": (changed(lambda r: r["formats"]["onnx"]["parity"].update(passed=1)),
                           "formats.onnx.parity.passed", "valid boolean"),
    "a scratch folder outside": (changed(lambda r: r.update(pending={"scratch": "../../user"})), "pending.scratch",
                                 "should match pattern"),
}


@pytest.mark.parametrize("record, field, says", TAMPERED.values(), ids=TAMPERED)
def test_a_tampered_record_names_the_file_and_the_field(tmp_path, record, field, says):
    with pytest.raises(UserError) as refused:
        read_export_record(written(tmp_path, record))
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'export.json'}: {field}: ") and says in message, message
    assert "\n" not in message and len(message) < 500


@pytest.mark.parametrize("text, says", [
    ("[1, 2]", "expected a JSON object, not list"),
    ("{\"name\": ", "cannot be read as JSON"),
    ("[" * 200 + "]" * 200, "JSON nested deeper than 64 levels"),
    (json.dumps({**RECORD, "class_names": ["x" * 100] * 20_000}), "too large for this file (limit 1,048,576)"),
], ids=["a list", "not JSON", "too deep", "too large"])
def test_a_record_that_is_no_record_names_the_file(tmp_path, text, says):
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'export.json'))}: ") as refused:
        read_export_record(written(tmp_path, text))
    assert says in str(refused.value)


def test_labels_are_read_and_written_in_one_place(tmp_path):
    assert read_labels(tmp_path) is None
    write_labels(tmp_path, ["cat", "dog"])
    assert (tmp_path / "labels.txt").read_text() == "cat\ndog\n" and read_labels(tmp_path) == ["cat", "dog"]
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'labels.txt'))}: cannot read"):
        read_labels(tmp_path)
    (tmp_path / "labels.txt").unlink()
    (tmp_path / "labels.txt").symlink_to(tmp_path / "elsewhere.txt")
    (tmp_path / "elsewhere.txt").write_text("cat\n")  # never read through the link
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'labels.txt'))}: cannot read"):
        read_labels(tmp_path)

