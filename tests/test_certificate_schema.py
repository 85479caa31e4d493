"""The typed certificate schema: strict reading, round trips, and the published JSON Schema."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jsonschema
import pytest
from test_certificate_io import _arrays, _body

from pacverify.certificate import schema as S
from pacverify.certificate.io import load_certificate, write_certificate
from pacverify.errors import InputError

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "certificate.schema.json"


def test_round_trip_is_exact():
    record = dataclasses.replace(_body(), integrity=S.Integrity("x"))
    again = S.body_from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert again.relaxation.rho_quantiles["0.5"] == float("inf")  # written as "inf", read back as a float
    assert again.verdict is S.Verdict.CERTIFIED


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["pac"].update(colour="red"), "pac has unknown key.*colour"),
    (lambda d: d["verification"].pop("verified"), "verification lacks key.*verified"),
    (lambda d: d["pac"].update(samples="many"), "pac.samples must be an integer"),
    (lambda d: d["pac"].update(samples=True), "pac.samples must be an integer"),
    (lambda d: d.update(verdict="PROBABLY"), "verdict must be one of CERTIFIED, NOT_CERTIFIED, REFUTED"),
    (lambda d: d["settings"].update(complete="yes"), "settings.complete must be true or false"),
    (lambda d: d["statements"].update(assumptions="none"), "statements.assumptions must be a list"),
    (lambda d: d["relaxation"].update(delta_T=float("nan")), "relaxation.delta_T must not be NaN"),
    (lambda d: d.update(schema="other/1"), "schema"),
])
def test_strict_reading_names_the_bad_key(edit, message):
    data = _body().to_dict()
    edit(data)
    with pytest.raises(InputError, match=message):
        S.body_from_dict(data)


def test_json_schema_file_is_the_generated_one():
    assert json.loads(SCHEMA_FILE.read_text()) == S.json_schema(), \
        "docs/certificate.schema.json is stale: python -m pacverify.certificate.schema > docs/certificate.schema.json"


def test_written_certificates_validate_against_the_json_schema(tmp_path):
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    cert = write_certificate(_body(), _arrays(), tmp_path)
    written = json.loads((tmp_path / "certificate.json").read_text())
    jsonschema.validate(written, schema)
    assert load_certificate(tmp_path).record == cert.record
    written["pac"]["colour"] = "red"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(written, schema)
