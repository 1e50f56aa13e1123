"""Standard TFLite Model Metadata for the classifiers edgetl exports, so other tools run them as they are.

Why: MediaPipe Tasks' `ImageClassifier` (Python, Android, iOS, web) and the TFLite
Task Library read labels and input normalisation only from TFLite Model Metadata;
without it they refuse a float-input model ("it requires specifying
NormalizationOptions metadata"). edgetl's own "edgetl" metadata entry (JSON) stays
beside it for what the standard cannot say.

Layout, as tflite-support's / MediaPipe's `MetadataPopulator` packs it, written here
with the `flatbuffers` package and the vendored generated schema
(`_tflite_metadata_schema`), because MediaPipe's writers do not import from its
PyPI wheel and tflite-support is no longer released:

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

from edgetl.errors import BadInputError
from edgetl.export import _tflite_metadata_schema as schema
from edgetl.runtime.preprocess import Preprocess

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


def build(preprocess: Preprocess, labels: list[str], name: str, version: str, description: str,
          author: str | None = None) -> bytes:
    """The serialized ModelMetadata flatbuffer for a one-input image classifier."""
    height, width = preprocess.size
    image = schema.TensorMetadataT()
    image.name, image.description = "image", "Input image to be classified."
    image.content = schema.ContentT()
    image.content.contentPropertiesType = schema.ContentProperties.ImageProperties
    image.content.contentProperties = schema.ImagePropertiesT()
    image.content.contentProperties.defaultSize = schema.ImageSizeT()
    image.content.contentProperties.defaultSize.width = width
    image.content.contentProperties.defaultSize.height = height
    if preprocess.color_order == "RGB":
        image.content.contentProperties.colorSpace = schema.ColorSpaceType.RGB
        mean, std = normalization(preprocess)
        unit = schema.ProcessUnitT()
        unit.optionsType = schema.ProcessUnitOptions.NormalizationOptions
        unit.options = schema.NormalizationOptionsT()
        unit.options.mean, unit.options.std = mean, std
        image.processUnits = [unit]
        image.stats = schema.StatsT()
        image.stats.min = [(0.0 - m) / s for m, s in zip(mean, std)]
        image.stats.max = [(255.0 - m) / s for m, s in zip(mean, std)]
    else:  # no standard way to say BGR: leave it UNKNOWN and unnormalised, so readers refuse it
        image.content.contentProperties.colorSpace = schema.ColorSpaceType.UNKNOWN

    score = schema.TensorMetadataT()
    score.name, score.description = "score", "Logits of the classes, in the order of labels.txt."
    score.content = schema.ContentT()
    score.content.contentPropertiesType = schema.ContentProperties.FeatureProperties
    score.content.contentProperties = schema.FeaturePropertiesT()
    labels_entry = schema.AssociatedFileT()
    labels_entry.name, labels_entry.type = LABELS_FILE, schema.AssociatedFileType.TENSOR_AXIS_LABELS
    labels_entry.description = "Class labels, one per line, in output order."
    score.associatedFiles = [labels_entry]

    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], [score]
    model = schema.ModelMetadataT()
    model.name, model.version, model.description, model.author = name, version, description, author
    model.subgraphMetadata = [subgraph]
    model.minParserVersion = MIN_PARSER_VERSION
    import flatbuffers  # comes with ai-edge-litert

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
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


def read(model_bytes: bytes) -> tuple[schema.ModelMetadataT | None, dict[str, bytes]]:
    """The TFLITE_METADATA tables (None if absent) and the zip-packed files of a .tflite."""
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.Model.GetRootAs(model_bytes, 0)
    metadata = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode("utf-8") == METADATA_NAME:
            data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0):
                raise BadInputError(f"{METADATA_NAME} entry is not a TFLite Model Metadata flatbuffer")
            metadata = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(data, 0))
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        files = {}
    return metadata, files
