"""Facts defined once stay defined once: the serve flags are the Settings, the docs' settings table is
generated from them, every command's model options read the same, and the bounds apply on every path.
These facts had drifted before (serve lacked aoti/int8 and eight settings; eval defaulted to torch;
`sigserve embed` accepted --max-num-patches 0)."""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sigserve import defaults
from sigserve.cli import build_app
from sigserve.server.settings import Settings, flag, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> dict:
    """Every leaf command by its path ("serve", "eval zeroshot", ...)."""
    out: dict = {}

    def walk(cmd, path: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out[path] = cmd

    walk(typer.main.get_command(build_app()), "")
    return out


def _option(cmd, name: str):
    return next((p for p in cmd.params if type(p).__name__.endswith("Option") and name in p.opts), None)


def test_every_setting_is_a_serve_flag_with_its_choices_and_bounds():
    serve = _commands()["serve"]
    for name, field in Settings.model_fields.items():
        option = _option(serve, flag(name))
        assert option is not None, f"{flag(name)} missing from `sigserve serve`"
        assert option.default is None  # not given: the environment, then the Settings default decide
        if typing.get_origin(field.annotation) is typing.Literal:  # the choices are the field's own type
            assert option.type_descriptor.annotation == field.annotation
        bounds = {type(m).__name__: m for m in field.metadata}
        if "Ge" in bounds and not isinstance(bounds["Ge"].ge, float):
            assert option.min == bounds["Ge"].ge
        if "Le" in bounds:
            assert option.max == bounds["Le"].le
    backend = _option(serve, "--backend").type_descriptor.annotation
    assert set(typing.get_args(backend)) == {"auto", "torch", "onnx", "openvino", "aoti"}
    assert "int8" in typing.get_args(_option(serve, "--precision").type_descriptor.annotation)


def test_serve_flags_reach_the_settings(monkeypatch):
    """The generated signature is really what typer parses: a flag and an env var reach Settings."""
    import sigserve.server.models as models_module
    from sigserve.errors import ModelLoadError

    seen = {}

    def capture(settings, say=None):
        seen["settings"] = settings
        raise ModelLoadError("stopped by the test before loading")

    monkeypatch.setattr(models_module, "load_models", capture)
    monkeypatch.setenv("SIGSERVE_MAX_LABELS", "17")
    result = CliRunner().invoke(build_app(), ["serve", "--request-timeout-s", "7", "--max-wait-ms", "0",
                                              "--backend", "aoti", "--no-jpeg-draft", "--model", "a/b",
                                              "-m", "/models/c=cee", "--memory-budget-mb", "900"])
    assert result.exit_code == 2 and "stopped by the test" in result.output
    settings = seen["settings"]
    assert settings.backend == "aoti" and settings.jpeg_draft is False
    assert settings.request_timeout_s == 7 and settings.max_wait_ms == 0 and settings.max_labels == 17
    assert [(s.model, s.served_name, s.backend) for s in settings.model_specs()] == [("a/b", "a/b", "aoti"),
                                                                                   ("/models/c", "cee", "aoti")]
    assert settings.memory_budget_mb == 900


def test_docs_settings_table_is_the_generated_one():
    text = (ROOT / "docs" / "server.md").read_text()
    assert markdown_table() in text, "run `python -m sigserve.server.settings docs/server.md` to rewrite the table"


@pytest.mark.parametrize("option", ["--model", "--backend", "--precision", "--load-format", "--max-num-patches"])
def test_model_options_read_the_same_in_every_command(option):
    found = {path: _option(cmd, option) for path, cmd in _commands().items()}
    found = {path: opt for path, opt in found.items() if opt is not None and path != "serve"}
    assert len(found) >= 3, found.keys()
    defaults_seen = {path: opt.default for path, opt in found.items()}
    assert len(set(map(str, defaults_seen.values()))) == 1, defaults_seen
    assert str(next(iter(defaults_seen.values()))) == str({
        "--model": defaults.DEFAULT_MODEL, "--backend": "auto", "--precision": "fp32", "--load-format": "auto",
        "--max-num-patches": None}[option])  # None: the model's own (NaFlex 256; a fixed resolution takes none)


@pytest.mark.parametrize("bad", [0, 8, 5000])
def test_patch_bounds_hold_on_the_library_path_every_command_uses(tiny_model, bad):
    """Pipeline.preprocess (what `sigserve embed` and the server engine call) refuses what the API
    refuses: the check sits in images.to_patches, which every path passes."""
    from sigserve.errors import InvalidArgumentError

    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InvalidArgumentError) as err:
        tiny_model.preprocess(image, 0, bad)
    assert err.value.param == "max_num_patches" and str(defaults.MIN_PATCHES) in str(err.value)


@pytest.mark.parametrize("bad", ["0", "8", "99999"])
def test_embed_refuses_out_of_range_patches_in_one_line(tiny_checkpoint, tmp_path, bad):
    result = CliRunner().invoke(build_app(), ["embed", "--text", "a", "-o", str(tmp_path / "x.jsonl"),
                                              "-m", str(tiny_checkpoint), "--max-num-patches", bad])
    assert result.exit_code == 2 and "max-num-patches" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.jsonl").exists()


def test_keys_command_finds_the_database_as_the_server_does(tmp_path, monkeypatch):
    """`sigserve keys` reads the same SIGSERVE_* variables as the server, through Settings."""
    from sigserve.accounts.keys import KeyStore

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("SIGSERVE_DATABASE_URL", url)
    result = CliRunner().invoke(build_app(), ["keys", "create", "--name", "ops"])
    assert result.exit_code == 0, result.output
    assert [k.name for k in KeyStore(url).list()] == ["ops"]
    assert Settings().resolved_database_url == url
