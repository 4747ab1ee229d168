"""Security properties checked on the code itself (the running services' side is in test_e2e, test_versions,
test_chaos and test_hostile): no unrestricted unpickling anywhere, and the services bind to loopback only."""
from __future__ import annotations

import re

from tests.conftest import REPO

CODE = [p for d in ("annotation_ui", "benchmarks", "fuzz", "gateway", "handler", "serving", "training")
        for p in (REPO / d).rglob("*.py")]


def test_no_code_path_unpickles_a_file_except_through_the_restricted_loader():
    for path in CODE:
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.relative_to(REPO)}: {line.strip()}"
        if path.name != "legacy.py":  # training/legacy.py: the restricted unpickler for the original newdata/
            assert not re.search(r"\bpickle\.(load|loads|Unpickler)\b", text), path.relative_to(REPO)
            assert "import dill" not in text, path.relative_to(REPO)
            assert "joblib.load" not in text, path.relative_to(REPO)


def test_every_listening_address_in_the_configuration_is_loopback():
    config = (REPO / "config.properties").read_text()
    addresses = re.findall(r"^(\w+_address)=(.*)$", config, flags=re.M)
    assert {k for k, _ in addresses} >= {"inference_address", "management_address", "metrics_address"}
    for key, value in addresses:
        assert "127.0.0.1" in value, f"{key}={value}"
    gunicorn = (REPO / "serving/stack.py").read_text()
    assert '"--bind", f"127.0.0.1:{stack.gateway_port}"' in gunicorn
