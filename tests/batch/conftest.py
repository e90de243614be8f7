"""Fixtures for `sigserve batch`: a real two-node Ray cluster (shared by the whole session: starting one
costs seconds) and a folder of generated images with broken ones among them (batch_support.py)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.batch.batch_support import make_images
from tests.batch.ray_local_cluster import LocalRayCluster


@pytest.fixture(scope="session")
def ray_cluster():
    """A head and a worker node (1 CPU each) on this machine, with this process set up to reach them
    (token auth), and Ray Data set to start only once the whole actor pool is up and to send each batch
    to the least busy actor, so that both nodes get work."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("RAY IS NOT INSTALLED: the batch tests need the batch extra (scripts/setup.sh test,eval,batch,int8)")
    cluster = LocalRayCluster(cpus_per_node=(1, 1))
    try:
        cluster.start()
    except RuntimeError as exc:
        pytest.skip(f"RAY COULD NOT START A LOCAL CLUSTER, batch tests not run: {exc}")
    # Ray reads its authentication settings when it is imported: set them first.
    assert "ray" not in sys.modules, "ray was imported before the cluster's token was set"
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved_ctx = (ctx.wait_for_min_actors_s, ctx.execution_options.actor_locality_enabled)
    # The tiny model finishes a batch in milliseconds: without these, the first actor up (or the one
    # beside the data) can take every batch, and the test could not see both nodes at work.
    ctx.wait_for_min_actors_s = 120
    ctx.execution_options.actor_locality_enabled = False
    try:
        yield cluster
    finally:
        ctx.wait_for_min_actors_s, ctx.execution_options.actor_locality_enabled = saved_ctx
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cluster.stop()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("batch-images"))
