"""Where sigserve keeps files: one module (sigserve.paths) that every part asks."""

from __future__ import annotations

from pathlib import Path

from sigserve import paths


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGSERVE_CACHE", str(tmp_path / "sc"))
    assert paths.cache_dir("eval") == tmp_path / "sc" / "eval"
    monkeypatch.delenv("SIGSERVE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir("onnx", "abc") == tmp_path / "xdg" / "sigserve" / "onnx" / "abc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert paths.cache_dir() == Path.home() / ".cache" / "sigserve"


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGSERVE_DATA_DIR", str(tmp_path / "d"))
    assert paths.data_dir("collections") == tmp_path / "d" / "collections"
    monkeypatch.delenv("SIGSERVE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.data_dir() == tmp_path / "xdg" / "sigserve"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert paths.data_dir() == Path.home() / ".local" / "share" / "sigserve"


def test_every_cache_user_asks_paths(monkeypatch, tmp_path, tiny_checkpoint):
    """The ONNX export, the compiled package, the dummy checkpoint and the eval cache all live under
    the one cache folder (they used to compute it three ways)."""
    from sigserve.backends import aoti, onnx
    from sigserve.dummy import dummy_checkpoint
    from sigserve.weights import resolve

    monkeypatch.setenv("SIGSERVE_CACHE", str(tmp_path))
    checkpoint = resolve(tiny_checkpoint)
    assert onnx.export_dir(checkpoint).parent == tmp_path / "onnx"
    assert aoti.package_path(checkpoint).parent.parent == tmp_path / "aoti"
    assert dummy_checkpoint(str(tiny_checkpoint)).path.parent == tmp_path / "dummy"
