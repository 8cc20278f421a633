"""The generated contract (docs/schema/, docs/asyncapi.yaml) matches the models."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from bus import topology
from schemas import contract
from schemas.envelope import PAYLOAD_TYPES
from schemas.jsonschemas import json_schemas


def test_the_committed_contract_is_up_to_date() -> None:
    stale = contract.stale_files()
    assert not stale, (
        "the generated protocol contract is out of date ("
        + "; ".join(stale)
        + "): run `python -m schemas.contract` and commit docs/schema/ and docs/asyncapi.yaml"
    )


def test_check_finds_missing_changed_and_leftover_files(tmp_path: Path) -> None:
    contract.write(tmp_path)
    assert contract.stale_files(tmp_path) == []
    assert contract.main(["--bogus"]) == 2
    (tmp_path / "docs/schema/heartbeat.json").write_text("{}")
    (tmp_path / "docs/schema/api.gone.json").write_text("{}")
    (tmp_path / "docs/asyncapi.yaml").unlink()
    assert sorted(contract.stale_files(tmp_path)) == [
        "docs/asyncapi.yaml is missing",
        "docs/schema/api.gone.json is not generated any more",
        "docs/schema/heartbeat.json is out of date",
    ]
    contract.write(tmp_path)
    assert contract.stale_files(tmp_path) == []


def test_one_schema_per_message_type_with_its_envelope() -> None:
    schemas = json_schemas()
    for message_type, cls in PAYLOAD_TYPES.items():
        schema = schemas[f"{message_type}.json"]
        assert schema["properties"]["type"]["const"] == message_type
        assert schema["properties"]["version"]["const"] == 1
        assert schema["properties"]["payload"] == {"$ref": f"#/$defs/{cls.__name__}"}
        closed = cls.model_config["extra"] == "forbid"
        assert ("additionalProperties" in schema["$defs"][cls.__name__]) == closed
        assert "additionalProperties" not in schema  # the envelope is open


def test_schemas_carry_the_limits() -> None:
    spec = json_schemas()["JobSpec.json"]["properties"]
    assert spec["cpu"]["minimum"] == 0.01 and spec["cpu"]["multipleOf"] == 0.001
    assert spec["env"]["propertyNames"]["pattern"].startswith("^[A-Za-z_]")
    assert {"type": "string"}.items() <= spec["memory"]["anyOf"][1].items()


def test_asyncapi_names_every_exchange_and_message() -> None:
    document = yaml.safe_load(contract.render()[contract.ASYNCAPI])
    assert document["asyncapi"].startswith("3.")
    channels = document["channels"].values()
    exchanges = {
        c["bindings"]["amqp"]["exchange"]["name"]
        for c in channels
        if "bindings" in c and "exchange" in c["bindings"]["amqp"]
    }
    assert exchanges == {e.name for e in topology.EXCHANGES}
    # Requests go through the role-keyed exchange, into the master's queue.
    api = document["channels"]["api"]
    assert api["bindings"]["amqp"]["exchange"]["name"] == topology.API_EXCHANGE
    assert api["address"] == topology.api_key("{role}", "{type}")
    assert topology.API_QUEUE in api["description"]
    messages = {ref["$ref"].rsplit("/", 1)[1] for c in channels for ref in c["messages"].values()}
    assert messages == {*PAYLOAD_TYPES, "deadLetter"}
    for operation in document["operations"].values():
        assert operation["channel"]["$ref"].removeprefix("#/channels/") in document["channels"]
    refs = json.dumps(document).count('"$ref": "#/components/schemas/')
    assert refs > len(PAYLOAD_TYPES)
    for name in json.dumps(document).split('"$ref": "#/components/schemas/')[1:]:
        assert name.split('"', 1)[0] in document["components"]["schemas"]
