"""A synthetic face dataset laid out exactly like the real VGGFace2 and LFW releases.

Every identity is a set of face parameters (face shape, skin, hair, eyes, brows, nose, mouth, ears,
glasses, facial hair, marks) drawn once from the seed; every image of it is drawn with Pillow under
per-image nuisance (expression, pose with a slight yaw, framing, clothes, background clutter, light,
colour cast, blur, sensor noise, JPEG quality). Faces are framed as in the real releases, so that face
alignment has work to do: VGGFace2 images are loose crops, the face 30-55% of the frame's shorter side and
its centre up to 15% of the frame off the middle; LFW images are 250 x 250 (lfw_image_size) around a
detector box, the face about 45% of the frame wide, centred with small jitter. The generator knows where
it drew every face: its 5 landmarks and a loose face box are written as VGGFace2's ``bb_landmark``
release has them (see `deepface.landmarks`).

The modules, each building on the ones above it:

    identity   `FaceIdentity`: one person's face parameters, drawn once (`draw_identity`)
    drawing    a person in one photo: pen, head geometry, features, expression
    photo      one photo under nuisance, framed as a release frames it (`render_photo`, `encode_jpeg`)
    jobs       what the dataset holds, identity by identity (`plan_identity_jobs`), the rendering of
               one identity (`render_identity`) and the LFW pairs (`make_lfw_pairs`)
    dataset    `make_synthetic_dataset`: the files on disk (layout in its docstring), and the
               ``deepface synth`` command
"""

from deepface.synth.dataset import (
    LFW_ARCHIVE,
    LFW_LANDMARKS,
    LFW_PAIRS,
    MD5SUMS,
    TEST_ARCHIVE,
    TEST_LIST,
    TRAIN_ARCHIVE,
    TRAIN_LIST,
    make_synthetic_dataset,
)
from deepface.synth.identity import EYE_SEPARATION, FaceIdentity, draw_identity
from deepface.synth.jobs import (
    LFW_FOLDS,
    MAX_PAIRS_PER_FOLD,
    IdentityJob,
    RenderedImage,
    lfw_image_counts,
    lfw_names,
    make_lfw_pairs,
    plan_identity_jobs,
    render_identity,
)
from deepface.synth.photo import LFW_FRAMING, VGGFACE2_FRAMING, Framing, Photo, encode_jpeg, render_face, render_photo

__all__ = [
    "EYE_SEPARATION",
    "LFW_ARCHIVE",
    "LFW_FOLDS",
    "LFW_FRAMING",
    "LFW_LANDMARKS",
    "LFW_PAIRS",
    "MAX_PAIRS_PER_FOLD",
    "MD5SUMS",
    "TEST_ARCHIVE",
    "TEST_LIST",
    "TRAIN_ARCHIVE",
    "TRAIN_LIST",
    "VGGFACE2_FRAMING",
    "FaceIdentity",
    "Framing",
    "IdentityJob",
    "Photo",
    "RenderedImage",
    "draw_identity",
    "encode_jpeg",
    "lfw_image_counts",
    "lfw_names",
    "make_lfw_pairs",
    "make_synthetic_dataset",
    "plan_identity_jobs",
    "render_face",
    "render_identity",
    "render_photo",
]
