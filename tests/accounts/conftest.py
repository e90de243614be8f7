"""A throwaway keys and usage database, and a fake clock."""

from __future__ import annotations

import pytest

from sigserve.accounts.keys import KeyStore


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'sigserve.db'}"


@pytest.fixture
def store(db_url):
    s = KeyStore(db_url)
    yield s
    s.close()
