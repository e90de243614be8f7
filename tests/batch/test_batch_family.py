"""`sigserve batch` with a fixed-resolution model: the rows equal the library's embeddings at the model's
own image size, the stored max_num_patches is null, and a length asked of such a model ends the job
with a clear error."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import sigserve
from sigserve.batch import embed
from sigserve.errors import BatchError
from tests.batch.batch_support import embeddings, good_images, read_output
from tests.support.checkpoints import make_checkpoint


@pytest.fixture(scope="module")
def fixed_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("siglip-fixed"), "tiny", seed=2, arch="siglip")


def test_fixed_resolution_rows_equal_embed_images(ray_cluster, image_folder, fixed_checkpoint, tmp_path):
    options = dict(model=str(fixed_checkpoint), ray_address=ray_cluster.address, workers=1, threads=1, batch_size=4,
                   progress=False)
    embed(str(image_folder), str(tmp_path / "out"), **options)
    table = read_output(tmp_path / "out")
    ok = table.filter(pa.compute.is_null(table["error"])).sort_by("id")
    good = good_images(image_folder)
    assert ok["id"].to_pylist() == good and set(table["max_num_patches"].to_pylist()) == {None}
    expected = sigserve.load(fixed_checkpoint).embed_images([image_folder / i for i in good])
    assert np.abs(embeddings(ok) - expected).max() <= 1e-6
    with pytest.raises(BatchError, match="fixed resolution"):
        embed(str(image_folder), str(tmp_path / "again"), **options, max_num_patches=64)
