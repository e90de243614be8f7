"""Property-based fuzzing of the OpenAPI schema (schemathesis strategies driven by hypothesis):
whatever the body, valid or not, the server answers without a 5xx, and every error it gives is
OpenAI's envelope. (schemathesis' pytest plugin does not run under pytest 9, so hypothesis
drives the strategies directly.)"""

from __future__ import annotations

import hypothesis.strategies as st
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.support.server import MODEL

EXAMPLES_PER_MODE = 60


def test_no_server_errors(live, http):
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/classify", "/v1/rerank", "/v1/patch_features"}
    seen: set[int] = set()

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        cases = st.sampled_from(operations).flatmap(lambda op, mode=mode: op.as_strategy(generation_mode=mode))

        @given(case=cases, served=st.booleans())
        @settings(max_examples=EXAMPLES_PER_MODE, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case, served):
            # Naming the served model lets bodies through the model check, into the engine.
            if served and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = MODEL
            response = case.call(base_url=live.url, timeout=60)
            seen.add(response.status_code)
            assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
    assert 200 in seen and seen & {400, 404, 422}  # both accepted and refused bodies were tried
    assert http.get("/ready").status_code == 200
