"""schemathesis against /openapi.json: every operation with positive and negative data and all checks (fixed seed,
a bounded number of examples), then the stateful phase along the spec's links (imgup -> imginfo, delete). No
5xx, no response that breaks the schema, no schema-valid request refused but for what a schema cannot say."""
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode

import fuzz.api_hooks  # photo strategies for the spec's file part, as make fuzz-api uses them
from gateway import create_app
from tests.conftest import COCO, FakeTagger


def _app():
    app = create_app({"TESTING": True, "DATA_DIR": tempfile.mkdtemp(prefix="fuzz-"), "TAGGER_CLIENT": FakeTagger()})
    with app.test_client() as c:  # one real photo, so that some generated id_names hit
        c.post("/imgup", data={"file": ((COCO / "images/000000000471.jpg").open("rb"), "bus.jpg"), "id_name": "bus"})
    return app


schema = schemathesis.openapi.from_wsgi("/openapi.json", _app())
# Generated text is Latin-1 (control characters included): with characters beyond the Basic Multilingual Plane,
# schemathesis 4.32's negative mode mistakes strings that match the id_name pattern (jsonschema_rs and Python's re
# both say they do) for violations. Astral characters in id_name are covered by tests/test_gateway.py instead.
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=30,
                                deterministic=True, database="none", codec="latin-1")
# JSON Schema cannot say "this id_name is stored": for schema-valid data the API may still answer the documented
# 404 (unknown id_name) or 409 (if_absent=1 on a taken one). Every other check runs as it comes.
schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "404", "409"]


def _unknown_token(failure, case) -> bool:
    """Nor can it say "this token is live": signing in with a made-up one is the documented 401 (as in
    fuzz/schemathesis.toml)."""
    from schemathesis.openapi.checks import RejectedPositiveData

    return isinstance(failure, RejectedPositiveData) and failure.status_code == 401 \
        and case.operation.definition.raw.get("operationId") == "signIn"


def _drop_false_reports(case, group):
    """Reports that the spec's own validator contradicts are dropped (fuzz.api_hooks.contradicted: two schemathesis
    4.32 mistakes about id_name), as is a made-up token's 401 on sign-in; every other failure stands."""
    if [f for f in group.exceptions if not fuzz.api_hooks.contradicted(f, case) and not _unknown_token(f, case)]:
        raise group


@schema.parametrize()
def test_api_conforms_to_its_own_spec(case):
    from schemathesis.core.failures import FailureGroup

    try:
        case.call_and_validate()
    except FailureGroup as group:
        _drop_false_reports(case, group)


def test_the_stateful_phase_follows_the_links_from_a_stored_photo():
    """Sequences along the spec's links: a photo stored by POST /imgup is then read (GET and POST /imginfo) and
    deleted under the id_name its answer gave, every response checked as above."""
    from schemathesis.core.failures import FailureGroup

    steps = []

    # the photo's own links (the trash's restore link is followed by test_gateway's trash test)
    class Workflow(schema.exclude(path_regex="^/trash").as_state_machine()):
        def validate_response(self, response, case, additional_checks=(), **kwargs):
            id_name = (case.query or {}).get("id_name") or (case.path_parameters or {}).get("id_name") \
                or (case.body.get("id_name") if isinstance(case.body, dict) else None)
            steps.append((case.operation.label, response.status_code, id_name if isinstance(id_name, str) else None))
            try:
                super().validate_response(response, case, additional_checks=additional_checks, **kwargs)
            except FailureGroup as group:
                _drop_false_reports(case, group)

    Workflow.run(settings=settings(max_examples=25, stateful_step_count=6, deadline=None, derandomize=True,
                                   database=None, suppress_health_check=list(HealthCheck)))
    stored = {i for op, code, i in steps if op == "POST /imgup" and code == 200}
    followed = {(op, code) for op, code, i in steps if i in stored and op != "POST /imgup"}
    assert ("GET /imginfo", 200) in followed, sorted(followed)
    assert ("DELETE /photos/{id_name}", 200) in followed, sorted(followed)
    assert ("POST /imginfo", 200) in followed or ("GET /imginfo", 404) in followed, sorted(followed)
