"""``deepface embed`` (`deepface.serving.embed.embed_folder`): every image of an archive embedded into shards,
as the Python API embeds it; a run killed with SIGKILL and rerun gives the same bytes as an uninterrupted one.

The model is tiny, trained for two steps on whole frames (``align=False``), so the drawn faces of the synthetic
LFW archive are embedded without a face detector (which does not find drawn faces).
"""

from __future__ import annotations

import sys
import tarfile

import numpy as np
import pytest
from conftest import tiny_model
from helpers.faults import FifoFeeder, kill_when, run, tree_bytes

import deepface
from deepface.contracts import MANIFEST_FILE
from deepface.errors import DeepFaceError
from deepface.serving.embed import SHARD_PATTERN, embed_folder, read_embeddings

EMBED = [sys.executable, "-m", "deepface.cli.embed"]
SHARD_SIZE = 8


@pytest.fixture(scope="module")
def model_dir(synth_dir, tmp_path_factory):
    return tiny_model(synth_dir, tmp_path_factory.mktemp("model"), aligned=False) / "model"


def archive_images(archive) -> dict[str, bytes]:
    """The image files of a tar archive by name, in archive order."""
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")}


def test_embeddings_are_those_of_the_python_api(model_dir, synth_dir, tmp_path):
    archive = synth_dir / "lfw.tgz"
    manifest = embed_folder(model_dir, archive, tmp_path / "out", shard_size=SHARD_SIZE, batch_size=5)
    images = archive_images(archive)
    names, embeddings = read_embeddings(tmp_path / "out")
    assert names == list(images) and manifest["embedded"] == manifest["images"] == len(images)
    assert len(manifest["shards"]) == -(-len(images) // SHARD_SIZE) and manifest["skipped"] == {}
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(images), manifest["embedding_size"])
    verifier = deepface.load(model_dir)
    chosen = [0, 7, 8, len(names) - 1]  # across shard and batch boundaries
    expected = verifier.embed([images[names[k]] for k in chosen])
    np.testing.assert_allclose(embeddings[chosen], expected, atol=1e-5)
    # A rerun finds the finished output; other settings are refused, naming them.
    assert embed_folder(model_dir, archive, tmp_path / "out", shard_size=SHARD_SIZE, batch_size=5) == manifest
    with pytest.raises(DeepFaceError, match="shard_size: 8 -> 9"):
        embed_folder(model_dir, archive, tmp_path / "out", shard_size=9, batch_size=5)


def test_undecodable_images_are_listed_not_embedded(model_dir, tmp_path):
    folder = tmp_path / "faces" / "someone"
    folder.mkdir(parents=True)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "face.png").write_bytes(_png())
    manifest = embed_folder(model_dir, tmp_path / "faces", tmp_path / "out")
    assert manifest["images"] == 2 and manifest["embedded"] == 1
    assert list(manifest["skipped"]) == ["someone/broken.jpg"] and "not an image" in manifest["skipped"][
        "someone/broken.jpg"]
    assert read_embeddings(tmp_path / "out")[0] == ["someone/face.png"]


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_killed_run_resumes_to_the_same_bytes(model_dir, synth_dir, tmp_path):
    data = (synth_dir / "lfw.tgz").read_bytes()
    stream = tmp_path / "lfw.tgz"  # the same source path in every run: a named pipe fed by the test

    def args(out):
        return ["--model", str(model_dir), "--images", str(stream), "--out", str(out), "--shard-size",
                str(SHARD_SIZE), "--batch-size", "4"]

    def fed_run(out, log):
        feeder = FifoFeeder(stream, data)
        feeder.start()
        try:
            return run(args(out), tmp_path / log, program=EMBED)
        finally:
            feeder.stop()

    fed_run(tmp_path / "reference", "reference.log")
    reference = tree_bytes(tmp_path / "reference")
    assert MANIFEST_FILE in reference and SHARD_PATTERN.format(0) in reference

    out = tmp_path / "out"
    feeder = FifoFeeder(stream, data, len(data) - 1024)  # never the end of the archive: the run cannot finish
    kill = kill_when(args(out), lambda: feeder.drained() and (out / SHARD_PATTERN.format(1)).exists(),
                     log_path=tmp_path / "killed.log", aim="an embedding run with two shards written",
                     before_start=feeder.start, after_kill=feeder.stop, program=EMBED)
    assert not (out / MANIFEST_FILE).exists(), kill.log
    log = fed_run(out, "resumed.log")
    assert "resuming: " in log
    assert tree_bytes(out) == reference
