"""`deepface.secrets.read_secret` against a fake Secret Manager REST endpoint on 127.0.0.1, through the
real google-cloud-secret-manager client; and the auth_secret setting's rules."""

from __future__ import annotations

import logging

import pytest
from helpers.fake_secret_manager import FakeSecretManager

from deepface.errors import DeepFaceError
from deepface.secrets import ENDPOINT_ENV, make_client, read_secret
from deepface.settings import FetchSettings, SettingError

VALUE = "X-Api-Key: sm-6e1f0a9c3b"
NAME = "projects/p/secrets/s/versions/latest"
DENIED = "projects/p/secrets/locked/versions/3"


@pytest.fixture
def secret_manager(monkeypatch):
    with FakeSecretManager({NAME: VALUE.encode()}, denied={DENIED}) as fake:
        monkeypatch.setenv(ENDPOINT_ENV, fake.url)
        yield fake


def test_reads_the_value_through_the_real_client(secret_manager, caplog):
    caplog.set_level(logging.DEBUG)
    assert read_secret(NAME) == VALUE
    assert secret_manager.requests == [f"/v1/{NAME}:access"]
    assert VALUE.split()[-1] not in caplog.text
    assert NAME in caplog.text  # the name is logged, the value is not


def test_an_explicit_client_is_used(secret_manager, monkeypatch):
    client = make_client()
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:9")  # not used: the client given is
    assert read_secret(NAME, client=client) == VALUE


def test_permission_denied_names_the_secret_and_the_role(secret_manager):
    with pytest.raises(DeepFaceError) as error:
        read_secret(DENIED)
    message = str(error.value)
    assert message.startswith(f"secret {DENIED}: access denied (HTTP 403)")
    assert "roles/secretmanager.secretAccessor" in message and "service account" in message
    assert "\n" not in message


def test_not_found_names_the_secret(secret_manager):
    missing = "projects/p/secrets/other/versions/1"
    with pytest.raises(DeepFaceError, match=r"^secret projects/p/secrets/other/versions/1: not found \(HTTP 404\)"):
        read_secret(missing)


def test_an_empty_value_is_refused(secret_manager):
    secret_manager.secrets[NAME] = b"  \n"
    with pytest.raises(DeepFaceError, match="its value is empty"):
        read_secret(NAME)


@pytest.mark.parametrize("name", ["projects/p/secrets/s", "s3cr3t-value", "projects/p/secrets/s/versions/",
                                  "projects/p/secrets/s/versions/1/extra"])
def test_auth_secret_must_be_a_version_name(name):
    with pytest.raises(SettingError, match="auth_secret"):
        FetchSettings(auth_secret=name)


def test_auth_secret_and_auth_header_env_are_exclusive():
    assert FetchSettings(auth_secret="projects/my-proj/secrets/vgg_face2/versions/7").auth_secret
    with pytest.raises(SettingError, match="either auth_header_env or auth_secret"):
        FetchSettings(auth_secret=NAME, auth_header_env="FETCH_AUTH")
    assert FetchSettings.from_kfp(auth_secret="", auth_header_env="").auth_secret is None
