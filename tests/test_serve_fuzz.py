"""descend serve: property-based fuzz of the OpenAPI schema (schemathesis): no request gets a 5xx.

A small image model (4x4 pixels, so that valid bodies are cheap to generate
and reach the network) is trained here and served by a real uvicorn on
127.0.0.1 and an ephemeral port.  Schemathesis generates valid and invalid
requests from /openapi.json for every operation and checks that none gets a
server error, that every status code and response body is the documented one,
and that invalid input is rejected.  The last test asserts over every response.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from descend.serve.app import create_app
from descend.train import TrainConfig, run_training

STATUSES: Counter = Counter()
LABELS: Counter = Counter()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    import descend.train.run as run_module

    folder = tmp_path_factory.mktemp("fuzz-model")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    X = (rng.uniform(0, 120, (120, 4, 4)) + 120 * y[:, None, None] * (np.arange(4) < 2)).astype(np.uint8)
    np.savez(folder / "tiny.npz", X=X, y=y, X_test=X[:30], y_test=y[:30], classes=np.array(["left", "right"]))
    cfg = TrainConfig(dataset=str(folder / "tiny.npz"), hidden=(4,), epochs=2, batch_size=30, engine="numpy",
                      schedule="constant", early_stopping="none")
    with pytest.MonkeyPatch.context() as mp:
        if hasattr(run_module, "write_reports"):
            mp.setattr(run_module, "write_reports", lambda *a, **k: None)
        model = run_training(cfg, out=folder / "run", progress=False).run_dir / "model.safetensors"
    app = create_app(model, max_batch=4, max_request_bytes=32 * 1024, reload_interval=0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def api_schema(base_url):
    return schemathesis.openapi.from_url(f"{base_url}/openapi.json")


# Hypothesis strategies per operation rather than @schema.parametrize(): the schema
# depends on the model trained in a fixture, and schemathesis' lazy fixture loader
# does not work with pytest >= 9.2.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_server_error(api_schema, mode):
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} == {"GET /health", "GET /model", "POST /predict"}
    for op in operations:
        if mode == GenerationMode.NEGATIVE and op.method.upper() == "GET":
            continue  # GET /health and /model take no input: nothing to make invalid
        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=60 if op.method.upper() == "POST" else 15, deadline=None, derandomize=True,
                  database=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            # Bytes that fit `format: binary` are rarely a PNG: valid per schema, rightly refused (422).
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance], timeout=30)
            STATUSES[response.status_code] += 1
            LABELS[(op.label, str(mode))] += 1

        fuzz()


def test_the_fuzz_saw_no_5xx_and_reached_the_model():
    assert STATUSES, "the fuzz ran no request"
    server_errors = {code: n for code, n in STATUSES.items() if code >= 500}
    print(f"\nschema fuzz: {sum(STATUSES.values())} requests, statuses {dict(sorted(STATUSES.items()))}, "
          f"per operation {dict(sorted(LABELS.items()))}")
    assert not server_errors
    assert STATUSES[200] > 0 and STATUSES[422] > 0
    assert LABELS[("GET /health", "positive")] and LABELS[("GET /model", "positive")]
    assert all(LABELS[("POST /predict", mode)] >= 20 for mode in ("positive", "negative"))
