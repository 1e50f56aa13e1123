"""Standard TFLite Model Metadata for the classifiers edgetl exports, so other tools run them as they are.

Why: MediaPipe Tasks' `ImageClassifier` (Python, Android, iOS, web) and the TFLite
Task Library read labels and input normalisation only from TFLite Model Metadata;
without it they refuse a float-input model ("it requires specifying
NormalizationOptions metadata"). edgetl's own "edgetl" metadata entry (JSON) stays
beside it for what the standard cannot say.

Layout, as tflite-support's / MediaPipe's `MetadataPopulator` packs it, written here
with the `flatbuffers` package from a table of the schema's field slots (`TABLES`,
from mediapipe/tasks/metadata/metadata_schema.fbs, schema 1.5.0), because MediaPipe's
writers do not import from its PyPI wheel and tflite-support is no longer released.
The tests read the result back with MediaPipe's own generated classes
(tests/tflite_metadata_schema.py) and run it in MediaPipe's ImageClassifier:

- a `ModelMetadata` flatbuffer (file identifier "M001"): name, description (the
  preprocessing in words), version, author, `min_parser_version`, and one
  `SubGraphMetadata` with
  - input "image": `ImageProperties` (RGB, default size W x H), a
    `NormalizationOptions` process unit with mean = 255 * mean and std = 255 * std
    per channel, so MediaPipe's `(pixel - mean) / std` on 0..255 pixels is edgetl's
    `(pixel / 255 - mean) / std` (`Preprocess.normalize`, step 3), and `Stats`
    min/max of the normalised values;
  - output "score": `FeatureProperties` and the associated file `labels.txt`
    (type TENSOR_AXIS_LABELS, one label per line in output order);
- that buffer in the model's `metadata` vector under the name "TFLITE_METADATA";
- `labels.txt` appended to the .tflite as a zip archive (stored, fixed timestamps so
  the bytes are reproducible). The model stays a valid flatbuffer: readers ignore the
  trailing bytes, and zip readers find the archive from its end record.

What it cannot say: the resize/centre-crop geometry (MediaPipe stretches its region
of interest, the whole image by default, to W x H: pass edgetl's centre crop as
`region_of_interest`, see scripts/check_mediapipe.py; it resamples without
antialiasing, so on frames much larger than the input an app should first resize
with an antialiased filter, as `--prescale` there measures), a BGR channel order (no
normalisation is written then, so MediaPipe refuses the model rather than answer
wrongly), and scores: the model outputs logits, which MediaPipe reports as they are
(the ranking is the same as after a softmax).

Quantized I/O: edgetl's int8 export keeps float32 input and output by default, which
reads exactly like fp32. With `io_dtype` int8 or uint8 the same NormalizationOptions
are written (the schema says quantized models share their float model's
normalisation), but MediaPipe and the Task Library refuse int8 tensors and feed raw
0..255 pixels to a uint8 input. MediaPipe (1.2.3) also refuses per-channel mean/std
(the MobileNet recipes' ImageNet values); the Lite recipes use one value for all
channels. `compatibility_notes` puts each of these in the artifact's notes.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

from edgetl.contract.preprocess import Preprocess
from edgetl.errors import BadInputError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
LABELS_FILE = "labels.txt"
# GetMinimumMetadataParserVersion (mediapipe/tasks/cc/metadata/metadata_version.cc) raises the 1.0.0
# default only for members added later: VOCABULARY / SCANN_INDEX_FILE files, AssociatedFile.version,
# subgraph input/output process units, tensor groups, tokenizer options, AudioProperties and custom
# metadata. This writer uses none of them (tests/test_tflite_metadata.py checks), so 1.0.0 is exact.
MIN_PARSER_VERSION = "1.0.0"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def normalization(preprocess: Preprocess) -> tuple[list[float], list[float]]:
    """edgetl's mean/std (on 0..1 pixels) in the 0..255 scale MediaPipe normalises."""
    return [255.0 * m for m in preprocess.mean], [255.0 * s for s in preprocess.std]


def labels_file(labels: list[str]) -> bytes:
    """One label per line, in output order; a label with a line break would shift every class after it."""
    bad = [label for label in labels if not label or "\n" in label or "\r" in label]
    if bad:
        raise BadInputError(f"label {bad[0]!r} cannot be written to the TFLite labels file",
                            "class names must be non-empty and on one line")
    return "".join(f"{label}\n" for label in labels).encode("utf-8")


def describe(preprocess: Preprocess, labels: list[str]) -> str:
    """The preprocessing in words, for what the metadata tables cannot express (Netron shows it)."""
    height, width = preprocess.size
    if preprocess.resize == "center-crop":
        geometry = (f"scale the image (aspect kept) to cover {height / preprocess.crop_ratio:g} x "
                    f"{width / preprocess.crop_ratio:g} px (H x W), keep the centred {height} x {width} "
                    f"(crop_ratio {preprocess.crop_ratio:g}), {preprocess.interpolation}")
    else:
        geometry = f"resize the whole image to {height} x {width} (H x W), {preprocess.interpolation}"
    mean, std = normalization(preprocess)
    shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
    return (f"Image classifier over {len(labels)} classes ({shown}). Input: {preprocess.color_order} "
            f"{height} x {width}; {geometry}; then (pixel - mean) / std per channel on 0-255 values with "
            f"mean {[round(m, 4) for m in mean]}, std {[round(s, 4) for s in std]}. Output: logits in label "
            "order (apply softmax for probabilities). Exported by edgetl; its sidecar model.json has the full "
            "record.")


# Enum values of metadata_schema.fbs used here.
COLOR_UNKNOWN, COLOR_RGB = 0, 1
CONTENT_FEATURE_PROPERTIES, CONTENT_IMAGE_PROPERTIES = 1, 2
UNIT_NORMALIZATION_OPTIONS = 1
FILE_TENSOR_AXIS_LABELS = 2

# table -> (number of fields in the schema, {field: (slot, kind)}) for every field this writer sets.
# Slots are the fields' positions in metadata_schema.fbs (schema 1.5.0); `kind` says how to write it.
TABLES = {
    "ModelMetadata": (8, {"name": (0, "str"), "description": (1, "str"), "version": (2, "str"),
                          "subgraph_metadata": (3, "tables"), "author": (4, "str"), "min_parser_version": (7, "str")}),
    "SubGraphMetadata": (10, {"input_tensor_metadata": (2, "tables"), "output_tensor_metadata": (3, "tables")}),
    "TensorMetadata": (7, {"name": (0, "str"), "description": (1, "str"), "content": (3, "table"),
                           "process_units": (4, "tables"), "stats": (5, "table"), "associated_files": (6, "tables")}),
    "Content": (3, {"content_properties_type": (0, "uint8"), "content_properties": (1, "table")}),
    "ImageProperties": (2, {"color_space": (0, "int8"), "default_size": (1, "table")}),
    "ImageSize": (2, {"width": (0, "uint32"), "height": (1, "uint32")}),
    "FeatureProperties": (0, {}),
    "ProcessUnit": (2, {"options_type": (0, "uint8"), "options": (1, "table")}),
    "NormalizationOptions": (2, {"mean": (0, "floats"), "std": (1, "floats")}),
    "Stats": (2, {"max": (0, "floats"), "min": (1, "floats")}),
    "AssociatedFile": (5, {"name": (0, "str"), "description": (1, "str"), "type": (2, "int8")}),
}


def _table(kind: str, **fields) -> tuple[str, dict]:
    known = TABLES[kind][1]
    unknown = set(fields) - set(known)
    if unknown:
        raise KeyError(f"{kind} has no field {', '.join(sorted(unknown))} in this writer's table")
    return kind, {k: v for k, v in fields.items() if v is not None}


def _write(builder, table: tuple[str, dict]) -> int:
    """Serialise one table (children first, as FlatBuffers requires); returns its offset."""
    kind, fields = table
    count, slots = TABLES[kind]
    offsets = {}
    for name, value in fields.items():
        how = slots[name][1]
        if how == "str":
            offsets[name] = builder.CreateString(value)
        elif how == "table":
            offsets[name] = _write(builder, value)
        elif how == "tables":
            children = [_write(builder, child) for child in value]
            builder.StartVector(4, len(children), 4)
            for child in reversed(children):
                builder.PrependUOffsetTRelative(child)
            offsets[name] = builder.EndVector()
        elif how == "floats":
            builder.StartVector(4, len(value), 4)
            for number in reversed(value):
                builder.PrependFloat32(float(number))
            offsets[name] = builder.EndVector()
    builder.StartObject(count)
    for name, value in fields.items():
        slot, how = slots[name]
        if name in offsets:
            builder.PrependUOffsetTRelativeSlot(slot, offsets[name], 0)
        else:
            {"int8": builder.PrependInt8Slot, "uint8": builder.PrependUint8Slot,
             "uint32": builder.PrependUint32Slot}[how](slot, int(value), 0)
    return builder.EndObject()


def build(preprocess: Preprocess, labels: list[str], name: str, version: str, description: str,
          author: str | None = None) -> bytes:
    """The serialized ModelMetadata flatbuffer for a one-input image classifier."""
    import flatbuffers  # pinned in the export extra

    height, width = preprocess.size
    units = stats = None
    if preprocess.color_order == "RGB":
        mean, std = normalization(preprocess)
        units = [_table("ProcessUnit", options_type=UNIT_NORMALIZATION_OPTIONS,
                        options=_table("NormalizationOptions", mean=mean, std=std))]
        stats = _table("Stats", max=[(255.0 - m) / s for m, s in zip(mean, std)],
                       min=[(0.0 - m) / s for m, s in zip(mean, std)])
    # else: no standard way to say BGR: leave it UNKNOWN and unnormalised, so readers refuse it
    image = _table("TensorMetadata", name="image", description="Input image to be classified.",
                   content=_table("Content", content_properties_type=CONTENT_IMAGE_PROPERTIES,
                                  content_properties=_table(
                                      "ImageProperties",
                                      color_space=COLOR_RGB if preprocess.color_order == "RGB" else COLOR_UNKNOWN,
                                      default_size=_table("ImageSize", width=width, height=height))),
                   process_units=units, stats=stats)
    score = _table("TensorMetadata", name="score", description="Logits of the classes, in the order of labels.txt.",
                   content=_table("Content", content_properties_type=CONTENT_FEATURE_PROPERTIES,
                                  content_properties=_table("FeatureProperties")),
                   associated_files=[_table("AssociatedFile", name=LABELS_FILE, type=FILE_TENSOR_AXIS_LABELS,
                                            description="Class labels, one per line, in output order.")])
    model = _table("ModelMetadata", name=name, description=description, version=version, author=author,
                   min_parser_version=MIN_PARSER_VERSION,
                   subgraph_metadata=[_table("SubGraphMetadata", input_tensor_metadata=[image],
                                             output_tensor_metadata=[score])])
    builder = flatbuffers.Builder(1024)
    builder.Finish(_write(builder, model), METADATA_IDENTIFIER)
    return bytes(builder.Output())


def populate(model_bytes: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """Put `metadata` under TFLITE_METADATA (replacing an older one) and append `files` as a zip.

    Any zip already appended is dropped with the repack (the flatbuffer ends before it), so
    populating twice gives the same layout as once.
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as tfl
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.read_model_from_bytearray(bytearray(model_bytes))
    for buffer in model.buffers:  # offset-resolved slices would be packed byte by byte: hand over arrays
        if buffer.data is not None and not isinstance(buffer.data, np.ndarray):
            buffer.data = np.frombuffer(bytes(buffer.data), dtype=np.uint8)
    buffer = tfl.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    model.metadata = model.metadata or []
    ours = [m for m in model.metadata if m.name in (METADATA_NAME, METADATA_NAME.encode())]
    if ours:  # reuse its buffer, as MetadataPopulator does: an orphaned one would stay in the file
        model.buffers[ours[0].buffer] = buffer
        model.metadata = [m for m in model.metadata if m not in ours[1:]]
    else:
        model.buffers.append(buffer)
        model.metadata.append(tfl.MetadataT(name=METADATA_NAME, buffer=len(model.buffers) - 1))
    out = io.BytesIO(bytes(fb.convert_object_to_bytearray(model)))
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a", zipfile.ZIP_STORED) as archive:
        for file_name, data in files.items():
            archive.writestr(zipfile.ZipInfo(file_name, date_time=_ZIP_TIME), data)
    return out.getvalue()


def add_classifier_metadata(model_bytes: bytes, labels: list[str], preprocess: Preprocess, model_name: str,
                            precision: str) -> bytes:
    """`model_bytes` with the standard metadata and labels.txt; everything else in the model is kept."""
    from edgetl import __version__

    graph = hashlib.sha256(model_bytes).hexdigest()[:12]  # the model as given (edgetl entry included), before this
    metadata = build(preprocess, labels, name=f"{model_name} image classifier ({precision})",
                     version=f"{precision}, graph sha256 {graph}", description=describe(preprocess, labels),
                     author=f"edgetl {__version__}")
    return populate(model_bytes, metadata, {LABELS_FILE: labels_file(labels)})


def compatibility_notes(preprocess: Preprocess, input_dtype: str, output_dtype: str) -> list[str]:
    """What MediaPipe Tasks / the Task Library cannot do with this model as written (empty: they run it)."""
    problems = []
    mean, std = normalization(preprocess)
    if preprocess.color_order != "RGB":
        problems.append(f"{preprocess.color_order} input: they feed RGB, so no normalisation is written and they "
                        "refuse the model")
    elif len(set(mean)) > 1 or len(set(std)) > 1:
        problems.append("per-channel mean/std: MediaPipe Tasks refuses it ('Per-channel image normalization is "
                        "not available'); the metadata still says it for the Task Library and other readers")
    if "int8" in (input_dtype, output_dtype):
        problems.append("they take float32 or uint8 tensors, not int8")
    if input_dtype == "uint8":
        problems.append("they feed raw 0-255 pixels to a uint8 input, without the normalisation and quantization "
                        "in model.json")
    if not problems:
        return []
    return [f"MediaPipe / TFLite Task Library ({input_dtype} input, {output_dtype} output): " + "; ".join(problems)]
