"""The HelseID settings per municipality, the key file checks, auth_for, and `journal keygen`."""

from __future__ import annotations

import importlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from alarmhub.cli.main import main
from alarmhub.clock import FakeClock
from alarmhub.journal.auth import RequestAuth
from alarmhub.journal.helseid import HelseIdAuth, auth_for
from alarmhub.settings import SettingsError, load_settings
from alarmhub.settings.helseid import load_signing_key, new_private_key, private_pem

ENDPOINT = "https://helseid-sts.test.nhn.no/connect/token"
JOURNAL = "https://jft.test.nhn.no/api"


@pytest.fixture
def ec_key(tmp_path: Path) -> Path:
    path = tmp_path / "0301.pem"
    path.write_bytes(private_pem(new_private_key("ec")))
    return path


def client(key: Path, **extra: str) -> dict[str, str]:
    return {"token_endpoint": ENDPOINT, "client_id": "alarmhub-0301", "key_file": str(key), **extra}


def test_clients_from_the_environment_as_json(ec_key, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ALARMHUB_JOURNAL_URL", JOURNAL + "/")
    monkeypatch.setenv(
        "ALARMHUB_JOURNAL_HELSEID",
        json.dumps(
            {
                "0301": client(ec_key),
                "4601": client(ec_key, client_id="alarmhub-4601", scope="nhn:jft/api other"),
            }
        ),
    )
    settings = load_settings()
    assert settings.journal_url == JOURNAL
    assert settings.journal_exporting() == frozenset({"0301", "4601"})
    assert settings.journal_helseid["0301"].scope == "nhn:jft/api"
    assert settings.journal_helseid["4601"].scope == "nhn:jft/api other"


def test_clients_from_a_toml_table(ec_key, tmp_path) -> None:
    config = tmp_path / "alarmhub.toml"
    config.write_text(
        f'journal_url = "{JOURNAL}"\n\n'
        '[journal_helseid."0301"]\n'
        f'token_endpoint = "{ENDPOINT}"\nclient_id = "alarmhub-0301"\nkey_file = "{ec_key}"\n'
    )
    settings = load_settings(config)
    assert settings.journal_exporting() == frozenset({"0301"})
    assert settings.journal_helseid["0301"].signing_key().algorithm == "ES256"


def test_no_client_no_export() -> None:
    assert load_settings(None).journal_exporting() == frozenset()


def bad(tmp_path: Path, what: str) -> Path:
    path = tmp_path / "bad.pem"
    if what == "public":
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        path.write_bytes(
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif what == "small-rsa":
        path.write_bytes(private_pem(rsa.generate_private_key(65537, 1024)))
    elif what == "p384":
        path.write_bytes(private_pem(ec.generate_private_key(ec.SECP384R1())))
    elif what == "garbage":
        path.write_text("not a key\n")
    return path


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("public", "not an unencrypted PEM private key"),
        ("small-rsa", "1024 bits; at least 2048"),
        ("p384", "ES256 needs P-256"),
        ("garbage", "not an unencrypted PEM private key"),
        ("missing", "cannot be read"),
    ],
)
def test_a_key_file_that_cannot_sign_stops_at_start(tmp_path, what, message) -> None:
    with pytest.raises(SettingsError) as failed:
        load_settings(
            None, journal_url=JOURNAL, journal_helseid={"0301": client(bad(tmp_path, what))}
        )
    text = str(failed.value)
    assert "ALARMHUB_JOURNAL_HELSEID" in text
    assert "0301.key_file" in text
    assert message in text
    assert "BEGIN" not in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"journal_url": "http://jft.example/api"}, "plain HTTP to another machine"),
        ({"municipality": "301"}, "'301' is not a municipality code"),
        ({"journal_url": None}, "without ALARMHUB_JOURNAL_URL"),
        ({"endpoint": "http://helseid.example/connect/token"}, "0301.token_endpoint"),
        ({"algorithm": "RS256"}, "a P-256 key: ES256"),
    ],
)
def test_bad_journal_settings_are_named(ec_key, values, message) -> None:
    values = dict(values)
    helseid = {values.pop("municipality", "0301"): client(ec_key)}
    if "endpoint" in values:
        helseid["0301"]["token_endpoint"] = values.pop("endpoint")
    if "algorithm" in values:
        helseid["0301"]["algorithm"] = values.pop("algorithm")
    given = {"journal_url": JOURNAL, "journal_helseid": helseid, **values}
    with pytest.raises(SettingsError, match=message):
        load_settings(None, **given)


def test_one_helseid_client_for_two_municipalities_is_refused(ec_key) -> None:
    """4601's table copied from 0301's (the client id left as it was): 4601's residents'
    notes went out as 0301's client, so NHN and the journal took them as written by 0301,
    the data controller of other residents' journals (promise 3). Refused at start."""
    helseid = {"0301": client(ec_key), "4601": client(ec_key)}
    with pytest.raises(SettingsError) as failed:
        load_settings(None, journal_url=JOURNAL, journal_helseid=helseid)
    text = str(failed.value)
    assert "ALARMHUB_JOURNAL_HELSEID" in text
    assert "0301 and 4601 share the HelseID client 'alarmhub-0301'" in text


def test_loopback_http_is_allowed_for_test_servers(ec_key) -> None:
    local = client(ec_key, token_endpoint="http://127.0.0.1:9/connect/token")
    settings = load_settings(
        None, journal_url="http://127.0.0.1:8/api", journal_helseid={"0301": local}
    )
    assert settings.journal_url == "http://127.0.0.1:8/api"


def test_a_private_jwk_file_is_a_key_too(tmp_path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "0301.jwk"
    path.write_text(ECAlgorithm.to_jwk(key))
    assert load_signing_key(path).public_jwk["x"]
    public_only = tmp_path / "public.jwk"
    public_only.write_text(ECAlgorithm.to_jwk(key.public_key()))
    with pytest.raises(ValueError, match="holds no private key"):
        load_signing_key(public_only)


async def test_auth_for_a_configured_municipality_only(ec_key) -> None:
    settings = load_settings(None, journal_url=JOURNAL, journal_helseid={"0301": client(ec_key)})
    clock = FakeClock(datetime(2026, 3, 2, tzinfo=UTC))
    async with httpx.AsyncClient() as http:
        auth: RequestAuth = auth_for(settings, "0301", http, clock)
        assert isinstance(auth, HelseIdAuth)
        with pytest.raises(LookupError, match="4601 has no HelseID client"):
            auth_for(settings, "4601", http, clock)


def test_keygen_writes_a_private_key_and_prints_the_public_jwk(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no config/alarmhub.toml here: the defaults
    # The CLI would point logging at capsys' stream, closed after this test (as in
    # tests/cli/test_journal_cli.py): logging stays as it was.
    monkeypatch.setattr(
        importlib.import_module("alarmhub.cli.main"), "configure_logging", lambda *_a: None
    )
    out = tmp_path / "0301.pem"
    code = main(["journal", "keygen", "--municipality", "0301", "--out", str(out), "--kind", "ec"])
    printed = capsys.readouterr()
    assert code == 0
    jwk = json.loads(printed.out)
    assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}  # nothing private
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("EC", "ES256", "sig")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "register the public JWK" in printed.err
    # The printed key verifies what the written key signs.
    key = load_signing_key(out)
    assert jwk["kid"] == key.thumbprint
    signed = jwt.encode({"x": 1}, key.private, "ES256")
    assert jwt.decode(signed, jwt.PyJWK(jwk).key, algorithms=["ES256"]) == {"x": 1}
    # An existing key is never replaced.
    again = main(["journal", "keygen", "--municipality", "0301", "--out", str(out)])
    assert again == 1
    assert "never replaced" in capsys.readouterr().err
    assert load_signing_key(out).public_jwk == key.public_jwk
