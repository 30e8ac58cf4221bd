"""The published OpenAPI contract against a real ``convhook serve``: schemathesis generates
requests for every operation, sends them over loopback and runs every check on each answer.

Each operation runs under two seeds: a fixed one, and a random one shown in the test id (and
printed) so a failure can be replayed with ``FUZZ_SEED=<seed>``. The server runs without a
dispatcher and with its SSRF guard on, so the endpoint URLs the fuzzer invents are stored but
never called.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, seed, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.servers import cli_process, free_port

pytestmark = pytest.mark.slow

FIXED_SEED = 20261207
# Under pytest-xdist every worker collects the tests and must name them alike: the run's id,
# shared by the workers, picks the random seed.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
RANDOM_SEED = int(
    os.environ.get("FUZZ_SEED") or (int(_RUN, 16) % 2**32 if _RUN else secrets.randbits(32))
)
# Examples per operation and seed on top of the coverage phase's own cases: the whole file
# stays well under two minutes on two cores.
MAX_EXAMPLES = 25
KEY = re.compile(r"chk_[A-Za-z0-9_-]+")

print(f"schemathesis seeds: fixed {FIXED_SEED}, random {RANDOM_SEED} (replay: FUZZ_SEED=...)")
# Requests sent and checked, by kind, for the summary printed when the module ends.
SENT = {"single requests": 0, "requests in chains": 0}


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    """Print how many generated requests were sent and checked (shown with ``-s``)."""
    yield
    print("schemathesis: " + ", ".join(f"{n} {kind}" for kind, n in SENT.items()))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``convhook serve`` on a fresh SQLite file, no dispatcher: its URL and the API key of
    the workspace it creates."""
    cwd = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(cwd / "fuzz.db")]
    args += ["--no-dispatch", "--synchronous", "NORMAL"]
    with cli_process(args, cwd=cwd, port=port) as proc:
        found = KEY.search(proc.stderr)
        assert found, proc.stderr
        yield f"http://127.0.0.1:{port}", found.group(0)


def _config(seed: int, key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": seed,
            # Both schemes the contract offers carry the workspace's key.
            "auth": {"openapi": {"apiKey": {"api_key": key}, "bearer": {"bearer": key}}},
            # NUL is refused in every string (PostgreSQL cannot store it), free-form objects'
            # keys included, which JSON Schema cannot say without a recursive schema.
            "generation": {"max-examples": MAX_EXAMPLES, "allow-x00": False},
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
        }
    )


@pytest.fixture(scope="module", params=[FIXED_SEED, RANDOM_SEED], ids=lambda s: f"seed={s}")
def api_schema(request: pytest.FixtureRequest, server: tuple[str, str]) -> Any:
    """The served ``/openapi.json``, loaded for one seed."""
    base, key = server
    return schemathesis.openapi.from_url(f"{base}/openapi.json", config=_config(request.param, key))


# A valid request to the live stream never ends (tests/e2e/test_stream.py covers it).
schema = schemathesis.pytest.from_fixture("api_schema").exclude(path="/api/v2/stream")


@pytest.fixture(autouse=True)
def _node_id(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the running test through ``Node._nodeid``, which pytest 9
    no longer has: give it one."""
    request.node._nodeid = request.node.nodeid


# Fields whose validity depends on what is stored or on the server's policy, which a schema
# cannot express: the SSRF guard's verdict on an endpoint ``url``, and references to a
# customer or agent that must exist in (or belong to) the workspace.
_STATE_FIELDS = frozenset({"url", "customerId", "agentId"})


def _refused_for_state(response: Any) -> bool:
    """A 422 whose every problem is on a field in :data:`_STATE_FIELDS` (at any batch index):
    a documented refusal of well-formed data."""
    if response.status_code != 422:
        return False
    try:
        problems = json.loads(response.content)["problems"]
        fields = [str(p["field"]).rsplit(".", 1)[-1] for p in problems]
    except (ValueError, KeyError, TypeError):
        return False
    return bool(fields) and all(f in _STATE_FIELDS for f in fields)


def accepts_valid_data(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis' positive_data_acceptance, except the documented refusals of
    well-formed data that depend on stored state or the URL policy."""
    if _refused_for_state(response):
        return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


@schema.parametrize()
def test_every_operation_keeps_its_contract(case: Any) -> None:
    """Every generated request gets an answer whose status, headers and body the published
    contract documents, valid requests are accepted and invalid ones refused with a 4xx."""
    SENT["single requests"] += 1
    with requests.Session() as session:
        case.call_and_validate(
            session=session,
            timeout=10,
            excluded_checks=[positive_data_acceptance],
            additional_checks=[accepts_valid_data],
        )


def test_chains_of_calls_keep_the_contract(api_schema: Any) -> None:
    """Chains of calls that reuse what earlier answers returned (create, read, change,
    delete) get documented answers, and a deleted object stays gone."""
    base = api_schema.exclude(path="/api/v2/stream").as_state_machine()
    failures: list[BaseException] = []
    sent_before = SENT["requests in chains"]

    class Chains(base):  # type: ignore[misc, valid-type]
        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            SENT["requests in chains"] += 1
            try:
                case.validate_response(
                    response,
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[accepts_valid_data, *(additional_checks or ())],
                    transport_kwargs=kwargs or None,
                    recorder=getattr(self, "recorder", None),
                )
            except Exception as exc:
                failures.append(exc)
                raise

    seed(api_schema.config.seed)(Chains)
    try:
        Chains.run(
            settings=settings(
                max_examples=MAX_EXAMPLES,
                stateful_step_count=6,
                deadline=None,
                # Replayable from the seed alone, not from examples saved by earlier runs.
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    except FlakyStrategyDefinition:
        # A chain draws from earlier answers (ids the server makes up, objects the fuzzer
        # deleted), so a later chain can meet a different choice where hypothesis recorded
        # one; schemathesis' own runner ends the run there too. Every answer sent so far was
        # checked, and a check that failed is raised here rather than hidden behind it.
        if failures:
            raise failures[0] from None
        ran = SENT["requests in chains"] - sent_before
        print(f"schemathesis: chains ended after {ran} requests (data depends on answers)")
        assert ran >= 20, "too few chained requests ran to judge the contract"
