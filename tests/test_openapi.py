"""The OpenAPI document describes the server that answers: schemathesis, every check and phase,
against a served process (tests/schemathesis.toml: seeded, a bounded number of examples)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api import start_service
from tests.test_process import stop

TOKEN = "schemathesis-token-0123456789"
CONFIG = Path(__file__).with_name("schemathesis.toml")
ROOT = Path(__file__).resolve().parent.parent
SCHEMATHESIS = ROOT / ".venv" / "bin" / "schemathesis"


def test_the_document_is_what_the_server_does(fresh_database: Callable[[], str]) -> None:
    process, base = start_service(
        fresh_database(), FREYA_API_TOKENS=f"checker:{TOKEN}:read,write,admin", FREYA_LOG_LEVEL="WARNING"
    )
    try:
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                f"{base}/schema/openapi.json",
                "--checks",
                "all",
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--request-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
    finally:
        stop(process)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]


async def test_limits_security_and_descriptions(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    text = (await client.get("/schema/openapi.json")).text
    assert "9.223372036854776e" not in text
    assert "\\\\A" not in text
    assert "\\\\Z" not in text
    user_id = doc["paths"]["/v1/users/{user_id}"]["get"]["parameters"][0]["schema"]
    assert user_id["maximum"] == 2**63 - 1
    assignment = doc["components"]["schemas"]["TopicAssignment"]
    assert assignment["additionalProperties"] is False
    assert assignment["properties"]["message_ids"]["items"]["minimum"] == 1
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for probe in ("/health/live", "/health/ready"):
        operation = doc["paths"][probe]["get"]
        assert operation["security"] == []
        assert not {"401", "403"} & set(operation["responses"])
    for item in doc["paths"].values():
        for operation in item.values():
            assert operation["description"]
    # Every GET is answered as HEAD too (the contract run above sends both): listed, without bodies.
    for item in doc["paths"].values():
        assert ("get" in item) == ("head" in item)
        if "head" in item:
            assert set(item["head"]["responses"]) == set(item["get"]["responses"])
            assert not any("content" in response for response in item["head"]["responses"].values())
    example = doc["paths"]["/v1/users"]["post"]["responses"]["409"]["content"]["application/problem+json"]
    assert next(iter(example["examples"].values()))["value"]["status"] == 409
