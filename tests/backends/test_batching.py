"""Pipeline batching for speed must not change results: windows sorted by patch count, decoding
prefetched in threads, and (opt-in) JPEG draft decoding within a stated distance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import sigserve
from sigserve.images import open_image

TOL = 1e-5


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return sigserve.load(tiny_checkpoint, backend="torch")


def jpeg_bytes(image: Image.Image, size) -> bytes:
    buf = io.BytesIO()
    image.resize(size, Image.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_sorted_prefetched_batches_keep_input_order(model, photos):
    images = list(photos.values()) * 3  # 21 images: several windows at batch_size 2, mixed grids
    one_by_one = np.concatenate([model.embed_images([im], max_num_patches=64) for im in images])
    batched = model.embed_images(images, max_num_patches=64, batch_size=2)
    assert np.abs(batched - one_by_one).max() <= TOL
    grids = model.patch_features(images, max_num_patches=64, batch_size=3)
    expected = [model.preprocess(im, None, 64) for im in images]
    assert [g.shape[:2] for g in grids] == [(p.rows, p.cols) for p in expected]


def test_a_bad_item_in_a_later_window_is_reported_by_its_index(model, photos):
    images = list(photos.values()) * 4 + [b"not an image"]
    with pytest.raises(sigserve.ImageDecodeError) as err:
        model.embed_images(images, batch_size=2)
    assert err.value.index == len(images) - 1


def test_jpeg_draft_is_opt_in_and_close(tiny_checkpoint, model, photos):
    data = jpeg_bytes(photos["chelsea"], (4000, 3000))
    assert open_image(data).size == (4000, 3000)  # default: full decode, bit-exact with the reference
    assert open_image(data, draft_max_num_patches=256).size[0] <= 2000  # reduced DCT scale
    assert open_image(jpeg_bytes(photos["chelsea"], (400, 300)), draft_max_num_patches=256).size == (400, 300)
    draft = sigserve.load(tiny_checkpoint, backend="torch", jpeg_draft=True)
    assert not model.jpeg_draft and draft.jpeg_draft
    for L in (256, 1024):
        a, b = model.embed_images([data], max_num_patches=L), draft.embed_images([data], max_num_patches=L)
        assert not np.array_equal(a, b)  # not exact: hence opt-in
        assert 1 - float((a.astype(np.float64) * b).sum()) <= 1e-4  # yet cosine >= 0.9999
        assert model.preprocess(data, None, L).num_patches == draft.preprocess(data, None, L).num_patches


def test_jpeg_draft_respects_exif_rotation(photos):
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the target grid is transposed against the stored pixels
    photos["rocket"].resize((4000, 1000)).save(buf, "JPEG", exif=exif)
    full = open_image(buf.getvalue())
    drafted = open_image(buf.getvalue(), draft_max_num_patches=256)
    assert full.size == (1000, 4000) and drafted.size[0] < 1000 and drafted.size[1] < 4000
    assert abs(drafted.size[0] / drafted.size[1] - 0.25) < 0.01
