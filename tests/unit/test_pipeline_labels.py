"""Run labels: Google Cloud's label rules and the default provenance labels (pipelines.params)."""

from __future__ import annotations

import pytest

from deepface.errors import DeepFaceError
from pipelines.params import MAX_LABELS, check_labels, label_value, parse_labels, provenance_labels

REPO = "us-central1-docker.pkg.dev/p/r/deepface-pipeline"


@pytest.mark.parametrize("image, checkout_tag, expected", [
    (f"{REPO}:0.1.0-g1a2b3c4d5e6f", None,
     {"deepface-image-tag": "0_1_0-g1a2b3c4d5e6f", "deepface-git-revision": "1a2b3c4d5e6f"}),
    (f"{REPO}:0.1.0-g1a2b3c4d5e6f-dirty-0123456789ab", None,
     {"deepface-image-tag": "0_1_0-g1a2b3c4d5e6f-dirty-0123456789ab", "deepface-git-revision": "1a2b3c4d5e6f-dirty"}),
    # A tag without a commit: the checkout's commit when the template was compiled here, else none.
    (f"{REPO}:2024.06", "0.1.0-g00aa11bb22cc",
     {"deepface-image-tag": "2024_06", "deepface-git-revision": "00aa11bb22cc"}),
    (f"{REPO}:2024.06", None, {"deepface-image-tag": "2024_06"}),
    (f"{REPO}:2024.06", "0.1.0", {"deepface-image-tag": "2024_06"}),  # outside a checkout: no commit
    # The image's own commit wins over the checkout's.
    (f"{REPO}:0.1.0-g1a2b3c4d5e6f", "0.1.0-g00aa11bb22cc",
     {"deepface-image-tag": "0_1_0-g1a2b3c4d5e6f", "deepface-git-revision": "1a2b3c4d5e6f"}),
    # A registry port is not a tag; a digest is shown, cut to a label's 63 characters.
    ("localhost:5000/deepface:0.1.0-test", None, {"deepface-image-tag": "0_1_0-test"}),
    (f"{REPO}@sha256:" + "ab" * 32, None, {"deepface-image-tag": ("sha256_" + "ab" * 32)[:63]}),
])
def test_provenance_labels(image, checkout_tag, expected):
    labels = provenance_labels(image, checkout_tag)
    assert labels == expected
    assert check_labels(labels) == labels  # always valid labels


def test_label_value_keeps_what_labels_allow():
    assert label_value("Release_1.2:RC-3") == "release_1_2_rc-3"
    assert len(label_value("x" * 100)) == 63


def test_label_rules():
    assert parse_labels(["team=faces", "env="]) == {"team": "faces", "env": ""}
    for bad in ("Team=faces", "team=Faces", "1team=x", "team", "t=" + "x" * 64):
        with pytest.raises(DeepFaceError, match="--label"):
            parse_labels([bad])
    with pytest.raises(DeepFaceError, match=f"at most {MAX_LABELS}"):
        check_labels({f"k{i}": "v" for i in range(MAX_LABELS + 1)})
    with pytest.raises(DeepFaceError, match="--label Team='faces'"):
        check_labels({"Team": "faces"})
