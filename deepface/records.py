"""What one image becomes in a TFRecord shard of schema v1, byte for byte, without TensorFlow.

This runs in the worker processes of `deepface.tfrecords` (and in its main process with one worker):

- `encode_records`: a chunk of images, ``(name, class id, identity, file bytes, landmarks or None)``
  each, -> per image ``(record, reason, faces)``: the finished record to append to a shard, or None
  and why the image cannot be stored, and how many faces the detector found.
- `encode_image`: one file's bytes -> the bytes to store (the face crop as JPEG, or with
  keep_original the file itself, validated); raises `deepface.faces.BadImage` for an image that
  cannot be stored.
- `make_example`: the serialized ``tf.train.Example`` of schema v1 (see `deepface.tfrecords`).
- `frame_record`: those bytes as one TFRecord record.

The bytes are the ones TensorFlow's ``Example.SerializeToString(deterministic=True)`` and
``TFRecordWriter`` write; nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import io

import google_crc32c
import numpy as np

from deepface.faces import BadImage, decode, face_image, open_image

# What tf.io.decode_image reads, so what keep_original may store as is (MPO: a phone's JPEG).
TF_DECODABLE_FORMATS = ("BMP", "GIF", "JPEG", "MPO", "PNG", "WEBP")


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """How images are stored: the face aligned (or the whole frame fitted) at ``image_size`` and encoded
    at ``jpeg_quality``, or the file kept as is; ``no_face``: what happens when no face is found."""

    image_size: int = 152
    keep_original: bool = False
    jpeg_quality: int = 90
    align: bool = True
    no_face: str = "skip"


def encode_image(data: bytes, options: ImageOptions, points: np.ndarray | None = None) -> tuple[bytes, int | None]:
    """The bytes to store for one image file: the face crop as JPEG (`deepface.faces.face_image`), or
    (keep_original) the file's own bytes.

    Args:
        data: the file's bytes.
        options: how to store it.
        points: the face's 5 landmarks (full-resolution pixels); None with ``options.align`` runs the
            detector of this process.

    Returns:
        ``(stored bytes, faces the detector found or None)``.

    Raises:
        BadImage: the file cannot be decoded or refused (see `deepface.faces.decode`), landmarks outside
            it, no face found (`NoFace`), or keep_original and a format TensorFlow does not decode.
    """
    if options.keep_original:
        image_format = open_image(data).format
        if image_format not in TF_DECODABLE_FORMATS:
            raise BadImage(
                f"unsupported format: {image_format} (TensorFlow decodes {', '.join(TF_DECODABLE_FORMATS)}); "
                "build without keep_original to convert it"
            )
        decode(data, scale=0.125)  # validation: DCT-reduced JPEGs still read every byte
        return data, None
    detector = None
    if options.align and points is None:
        from deepface.detect import process_detector  # this worker's, loaded once (TensorFlow's import takes seconds)

        detector = process_detector()
    face, info = face_image(data, options.image_size, align_face=options.align, points=points, detector=detector,
                            no_face=options.no_face)
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG", quality=options.jpeg_quality)
    return buffer.getvalue(), info["faces"]


# One image to store, as sent to a worker: (file name, class id, identity, file bytes, landmarks or None).
ImageTask = tuple[str, int, str, bytes, "np.ndarray | None"]
# What a worker returns per image: (record to append, or None; why it was skipped, or None; faces found).
Encoded = tuple["bytes | None", "str | None", "int | None"]


def encode_records(images: list[ImageTask], options: ImageOptions) -> list[Encoded]:
    """The TFRecord records of a chunk of images (in a worker process).

    Args:
        images: ``(name, label, identity, data, points)`` per image: its path in the source, class id,
            identity id, file bytes and landmarks (None: detect).
        options: how to store the images.

    Returns:
        One ``(record, reason, faces)`` per image, in order: the bytes to append to a shard
        (`frame_record` of the image's `make_example`) or, for an image that cannot be stored, None and
        the reason (see `BadImage`); ``faces``: how many faces the detector found (None without it).
    """
    results = []
    for name, label, identity, data, points in images:
        try:
            encoded, faces = encode_image(data, options, points)
            results.append((frame_record(make_example(encoded, label, identity, name)), None, faces))
        except BadImage as error:
            results.append((None, str(error), None))
    return results


def _example_class() -> type:
    """The message class of ``tensorflow.Example`` (tensorflow/core/example/{example,feature}.proto, the
    fields schema v1 uses), declared here to the protobuf library so that workers serialize Examples with
    protobuf's own encoder without importing TensorFlow."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806 - its constants read as in the .proto files
    proto = descriptor_pb2.FileDescriptorProto(name="deepface/example.proto", package="tensorflow", syntax="proto3")
    bytes_list = proto.message_type.add(name="BytesList")
    bytes_list.field.add(name="value", number=1, type=F.TYPE_BYTES, label=F.LABEL_REPEATED)
    int64_list = proto.message_type.add(name="Int64List")
    int64_list.field.add(name="value", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)  # packed (proto3)
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    feature.field.add(name="bytes_list", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.BytesList",
                      oneof_index=0)
    feature.field.add(name="int64_list", number=3, type=F.TYPE_MESSAGE, type_name=".tensorflow.Int64List",
                      oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry", options=descriptor_pb2.MessageOptions(map_entry=True))
    entry.field.add(name="key", number=1, type=F.TYPE_STRING)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED,
                       type_name=".tensorflow.Features.FeatureEntry")
    example = proto.message_type.add(name="Example")
    example.field.add(name="features", number=1, type=F.TYPE_MESSAGE, type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


_Example = _example_class()


def make_example(encoded: bytes, label: int, identity: str, filename: str) -> bytes:
    """One serialized ``tf.train.Example`` of schema v1: the bytes of
    ``tf.train.Example(...).SerializeToString(deterministic=True)`` (map entries sorted by key, so the
    same input gives the same bytes); tests/test_tfrecords.py checks the two agree."""
    example = _Example()
    feature = example.features.feature
    feature["image/encoded"].bytes_list.value.append(encoded)
    feature["image/class/label"].int64_list.value.append(label)
    feature["image/class/identity"].bytes_list.value.append(identity.encode("utf-8"))
    feature["image/filename"].bytes_list.value.append(filename.encode("utf-8"))
    return example.SerializeToString(deterministic=True)


def _masked_crc32c(data: bytes) -> bytes:
    """TFRecord's checksum of ``data``: its CRC-32C, rotated and offset ("masked"), 4 bytes little-endian."""
    crc = google_crc32c.value(data)
    return (((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFF_FFFF).to_bytes(4, "little")


def frame_record(data: bytes) -> bytes:
    """``data`` as one TFRecord record, the bytes ``tf.io.TFRecordWriter.write(data)`` appends.

    Layout: length (uint64 little-endian), masked CRC-32C of those 8 bytes, ``data``, masked CRC-32C
    of ``data``: ``len(data) + 16`` bytes.
    """
    length = len(data).to_bytes(8, "little")
    return b"".join((length, _masked_crc32c(length), data, _masked_crc32c(data)))

