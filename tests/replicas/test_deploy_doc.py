"""docs/deploy.md's environment file and systemd unit name real settings with valid values (its
nginx block is run by test_fleet.py)."""

from __future__ import annotations

import re
from pathlib import Path

from sigserve.server.settings import ENV_PREFIX, Settings, flag

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def _block(first_line: str) -> str:
    blocks = [b for b in re.findall(r"```ini\n(.*?)```", DOC.read_text(), re.S) if b.startswith(first_line)]
    assert len(blocks) == 1, f"docs/deploy.md: no single ini block starting with {first_line!r}"
    return blocks[0]


def test_environment_file_is_valid_settings(monkeypatch):
    pairs = [line.split("=", 1) for line in _block("# /etc/sigserve/sigserve.env").splitlines()
             if line and not line.startswith("#")]
    assert len(pairs) >= 10
    for name, value in pairs:
        assert name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX):].lower() in Settings.model_fields, name
        monkeypatch.setenv(name, value)
    settings = Settings()  # raises on any invalid value
    assert settings.redis_url and settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.max_body_bytes == Settings.model_fields["max_body_bytes"].default


def test_nginx_limits_match_the_server_defaults():
    text = DOC.read_text()
    body = Settings.model_fields["max_body_bytes"].default
    assert f"client_max_body_size {body // (1024 * 1024)}m;" in text
    read = int(re.search(r"proxy_read_timeout (\d+)s;", text).group(1))
    assert read > Settings.model_fields["request_timeout_s"].default  # sigserve answers its own timeout first


def test_systemd_unit_uses_real_flags():
    unit = _block("# /etc/systemd/system/sigserve@.service")
    start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    for used in re.findall(r"(--[a-z-]+)", start):
        assert used in {flag(name) for name in Settings.model_fields}, used
