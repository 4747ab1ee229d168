"""A short version of `make load` (which runs 16 clients for 4 minutes): the same mixed load against the real
stack for 8 s with TorchServe keys expiring every 6 s, and not one failed request."""
import pytest

from benchmarks.load import run

pytestmark = pytest.mark.stack  # starts real TorchServe (make test-fast leaves it out)


def test_short_mixed_load_across_key_expiries_has_no_failed_request():
    result = run(seconds=8, clients=16, key_minutes=0.1, warmup=3)
    assert result["failed"] == 0, result["failures"]
    assert result["inference_keys_seen"] >= 2
    assert result["requests"] > 100  # the key was renewed under load
    assert result["processes_replaced"] <= result["gateway_workers_recycled_by_max_requests"]  # no crash
    assert set(result["latency_ms"]) == {"imgup", "imginfo-new", "imginfo-old", "photos"}
