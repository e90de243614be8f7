"""The reliability campaign, small (about a minute): a real `sigserve serve` process on loopback,
every phase once. The long mode (`python -m tests.reliability --minutes 30`) runs the same phases at
scale for docs/reliability.md."""

from __future__ import annotations

from tests.reliability.campaign import run_campaign


def test_campaign_small(tiny_checkpoint, tmp_path):
    report = run_campaign(tiny_checkpoint, tmp_path / "data", scale=1.0)
    assert report["fuzz"]["requests"] >= 100 and not report["fuzz"]["failures"], report["fuzz"]
    assert report["hostile_inputs"]["all_4xx"], report["hostile_inputs"]
    assert report["mixed_concurrency"]["wrong_status"] == 0, report["mixed_concurrency"]
    starved = report["starvation"]
    assert starved["light_requests"] > 0 and set(starved["light_statuses"]) == {200}, starved
    assert report["memory"]["statuses"] == {200: 4}, report["memory"]
    assert report["quota"]["exact"], report["quota"]
    assert report["slow_clients"]["still_open"] == 0 and report["slow_clients"]["server_ready"], report["slow_clients"]
    assert report["kill_under_load"]["consistent"], report["kill_under_load"]
    assert report["ready_at_end"]
