"""The fetch stage on every kind of source, with real servers on loopback (HTTP, GCS emulator)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.fake_secret_manager import FakeSecretManager
from helpers.servers import HttpFileServer, gcs_emulator, http_server  # noqa: F401 (fixtures)

from deepface.cli import main
from deepface.errors import DeepFaceError
from deepface.fetch import KNOWN_MD5, fetch
from deepface.fingerprint import fingerprint_source
from deepface.secrets import ENDPOINT_ENV
from deepface.settings import SettingError
from deepface.uris import redact_uri

SECRET = "s3cr3t-value-that-must-not-leak"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(size: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, distinct per seed)."""
    blocks, counter = [], 0
    while sum(map(len, blocks)) < size:
        blocks.append(hashlib.sha256(f"{seed}:{counter}".encode()).digest())
        counter += 1
    return b"".join(blocks)[:size]


def md5sums(files: dict[str, bytes]) -> bytes:
    return "".join(f"{md5(data)}  {name}\n" for name, data in sorted(files.items())).encode()


def read_manifest(out_dir: Path) -> dict:
    return json.loads((out_dir / "manifest.json").read_text())


def all_output_bytes(out_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(out_dir.rglob("*")) if path.is_file())


DATA = payload(300_000, seed=1)
SMALL = payload(5_000, seed=2)


# ---------------------------------------------------------------------------------------------------- local


def test_local_path_and_file_uri(tmp_path):
    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(DATA)

    for name, given in [("plain", str(source)), ("uri", source.as_uri())]:
        out = tmp_path / name
        manifest = fetch([given], out)
        assert (out / "data.bin").read_bytes() == DATA
        assert manifest == read_manifest(out)
        assert manifest["files"] == {
            "data.bin": {"source": given, "bytes": len(DATA), "md5": md5(DATA), "verified": "unverified"}
        }
        assert sorted(p.name for p in out.iterdir()) == ["data.bin", "manifest.json"]


def test_local_directory_prefix_keeps_relative_names_and_uses_md5sums(tmp_path):
    files = {"b.bin": DATA, "sub/a.bin": SMALL, "sub/deeper/c.txt": b"c\n"}
    root = tmp_path / "src"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "MD5SUMS").write_bytes(md5sums({"b.bin": DATA, "sub/a.bin": SMALL}))

    for given in [str(root), str(root) + "/"]:
        out = tmp_path / f"out{len(given)}"
        manifest = fetch(given, out)
        assert list(manifest["files"]) == ["MD5SUMS", "b.bin", "sub/a.bin", "sub/deeper/c.txt"]
        for name, data in files.items():
            assert (out / name).read_bytes() == data
        verified = {name: entry["verified"] for name, entry in manifest["files"].items()}
        assert verified == {"MD5SUMS": "unverified", "b.bin": "MD5SUMS", "sub/a.bin": "MD5SUMS",
                            "sub/deeper/c.txt": "unverified"}
        assert not list(out.rglob("*.part"))


def test_output_is_deterministic(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.bin").write_bytes(SMALL)
    fetch([str(tmp_path / "src")], tmp_path / "one")
    fetch([str(tmp_path / "src")], tmp_path / "two")
    assert (tmp_path / "one" / "manifest.json").read_bytes() == (tmp_path / "two" / "manifest.json").read_bytes()


def test_synthetic_dataset_prefix_verifies_archives(synth_dir, tmp_path):
    manifest = fetch(str(synth_dir) + "/", tmp_path / "out")
    entries = manifest["files"]
    for archive in ["vggface2_train.tar.gz", "vggface2_test.tar.gz", "lfw.tgz"]:
        assert entries[archive]["verified"] == "MD5SUMS"
        assert entries[archive]["md5"] == md5((synth_dir / archive).read_bytes())
        assert entries[archive]["md5"] != KNOWN_MD5.get(archive)  # synthetic, not the real release


# ---------------------------------------------------------------------------------------------------- gs://


def test_gcs_object_and_prefix(gcs_emulator, tmp_path):
    gcs_emulator.upload("bucket", {
        "data/a.bin": DATA, "data/sub/b.bin": SMALL, "data/MD5SUMS": md5sums({"a.bin": DATA}),
        "other/c.bin": b"c",
    })

    single = fetch(["gs://bucket/data/a.bin"], tmp_path / "single")
    assert (tmp_path / "single" / "a.bin").read_bytes() == DATA
    assert single["files"]["a.bin"] == {
        "source": "gs://bucket/data/a.bin", "bytes": len(DATA), "md5": md5(DATA), "verified": "MD5SUMS"
    }

    prefix = fetch(["gs://bucket/data/"], tmp_path / "prefix")
    assert list(prefix["files"]) == ["MD5SUMS", "a.bin", "sub/b.bin"]
    assert (tmp_path / "prefix" / "sub" / "b.bin").read_bytes() == SMALL
    # without an MD5SUMS entry, the MD5 that GCS stores with the object is checked
    assert prefix["files"]["sub/b.bin"]["verified"] == "gcs-object-md5"
    assert prefix["files"]["a.bin"]["verified"] == "MD5SUMS"


def test_gcs_resumes_partial_file_with_ranged_read(gcs_emulator, tmp_path, caplog):
    gcs_emulator.upload("bucket", {"big.bin": DATA})
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.bin.part").write_bytes(DATA[:123_456])

    with caplog.at_level(logging.INFO):
        manifest = fetch(["gs://bucket/big.bin"], out)

    assert (out / "big.bin").read_bytes() == DATA
    assert manifest["files"]["big.bin"]["md5"] == md5(DATA)
    downloads = [r.getMessage() for r in caplog.records
                 if r.name.startswith("gcp_storage_emulator")
                 and "/download/storage/v1/b/bucket/o/big.bin" in r.getMessage()]
    assert len(downloads) == 1 and '" 206 ' in downloads[0]  # one ranged read, not a full one
    assert "resuming from byte 123456" in caplog.text


def test_gcs_corrupt_partial_file_is_caught_by_stored_md5(gcs_emulator, tmp_path):
    gcs_emulator.upload("bucket", {"big.bin": DATA})
    out = tmp_path / "out"
    out.mkdir()
    (out / "big.bin.part").write_bytes(b"\0" * 1000)  # not the start of the object

    with pytest.raises(DeepFaceError, match="MD5 mismatch for big.bin") as error:
        fetch(["gs://bucket/big.bin"], out)
    assert md5(DATA) in str(error.value)
    assert not (out / "big.bin.part").exists() and not (out / "big.bin").exists()
    fetch(["gs://bucket/big.bin"], out)  # the rerun starts afresh
    assert (out / "big.bin").read_bytes() == DATA


def test_gcs_missing_object_and_empty_prefix(gcs_emulator, tmp_path):
    gcs_emulator.upload("bucket", {"data/a.bin": SMALL})
    with pytest.raises(DeepFaceError, match=r"gs://bucket/data/missing\.bin not found"):
        fetch(["gs://bucket/data/missing.bin"], tmp_path / "out")
    with pytest.raises(DeepFaceError, match=r"no files under gs://bucket/nothing/"):
        fetch(["gs://bucket/nothing/"], tmp_path / "out")


# ---------------------------------------------------------------------------------------------------- http


def test_http_without_auth(http_server, tmp_path):
    http_server.files = {"d/a.bin": DATA}
    manifest = fetch([http_server.url("d/a.bin")], tmp_path / "out")
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA
    assert manifest["files"]["a.bin"]["source"] == http_server.url("d/a.bin")
    assert "Authorization" not in http_server.gets("d/a.bin")[0].headers


@pytest.mark.parametrize(
    "env_value, header",
    [(f"Bearer {SECRET}", ("Authorization", f"Bearer {SECRET}")),
     (f"X-Api-Key: {SECRET}", ("X-Api-Key", SECRET))],
    ids=["bare-value-is-authorization", "named-header"],
)
def test_http_with_auth_header_from_environment(tmp_path, monkeypatch, env_value, header):
    monkeypatch.setenv("FETCH_AUTH", env_value)
    with HttpFileServer({"a.bin": DATA}, required_header=header) as server:
        with pytest.raises(DeepFaceError, match=r"HTTP 401.*auth_header_env"):
            fetch([server.url("a.bin")], tmp_path / "refused")
        assert not (tmp_path / "refused" / "a.bin").exists()

        fetch([server.url("a.bin")], tmp_path / "out", auth_header_env="FETCH_AUTH")
        assert (tmp_path / "out" / "a.bin").read_bytes() == DATA
        assert server.gets("a.bin")[-1].headers[header[0]] == header[1]

        monkeypatch.setenv("FETCH_AUTH", f"{header[0]}: wrong-value-xyz")
        with pytest.raises(DeepFaceError, match=r"HTTP 403.*FETCH_AUTH was sent but refused") as error:
            fetch([server.url("a.bin")], tmp_path / "wrong", auth_header_env="FETCH_AUTH")
        assert "wrong-value-xyz" not in str(error.value)


def test_secret_never_leaks_to_logs_outputs_or_manifest(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("FETCH_AUTH", f"X-Secret: {SECRET}")
    files = {"a.bin": DATA, "b.txt": SMALL}
    with HttpFileServer({**files, "MD5SUMS": md5sums(files)}, required_header=("X-Secret", SECRET)) as server:
        signed = (
            server.url("a.bin").replace("http://", "http://user:pass-word@") + "?X-Goog-Signature=sig-value&alt=media"
        )
        caplog.set_level(logging.DEBUG)
        out = tmp_path / "out"
        server.cut("a.bin", 1000)  # exercise the retry path's messages too
        manifest = fetch([signed, server.url("b.txt")], out, auth_header_env="FETCH_AUTH", retries=1)
        result = CliRunner().invoke(main, ["fetch", "--source", server.url("b.txt"), "--out", str(tmp_path / "cli"),
                                           "--auth-header-env", "FETCH_AUTH"])
        assert result.exit_code == 0, result.output

    assert manifest["files"]["a.bin"]["source"] == server.url("a.bin") + "?alt=media"
    assert manifest["files"]["a.bin"]["verified"] == "MD5SUMS"
    captured = capsys.readouterr()
    texts = {"logs": caplog.text, "stdout": captured.out, "stderr": captured.err, "cli": result.output,
             "files": all_output_bytes(out).decode("latin-1") + all_output_bytes(tmp_path / "cli").decode("latin-1")}
    for where, text in texts.items():
        assert SECRET not in text, where
    fetch_logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("deepface"))
    for token in ["pass-word", "sig-value"]:
        assert token not in fetch_logs and token not in texts["files"]
    assert "resuming" in fetch_logs


def test_http_prefix_with_the_header_from_secret_manager(tmp_path, monkeypatch, caplog, capsys):
    """auth_secret: the header is read from (a fake) Secret Manager through the real client and sent to the
    server; its value reaches no log line, manifest, output file or error message."""
    secret_name, denied = "projects/p/secrets/s/versions/latest", "projects/p/secrets/locked/versions/1"
    files = {"a.bin": DATA, "b.txt": SMALL}
    caplog.set_level(logging.DEBUG)
    with FakeSecretManager({secret_name: f"X-Secret: {SECRET}".encode()}, denied={denied}) as secrets, \
            HttpFileServer({f"d/{name}": data for name, data in files.items()} | {"d/MD5SUMS": md5sums(files)},
                           required_header=("X-Secret", SECRET)) as server:
        monkeypatch.setenv(ENDPOINT_ENV, secrets.url)
        out = tmp_path / "out"
        manifest = fetch([server.url("d/")], out, auth_secret=secret_name)
        fingerprint = fingerprint_source(server.url("d/"), auth_secret=secret_name)
        result = CliRunner().invoke(main, ["fetch", "--source", server.url("d/b.txt"), "--out", str(tmp_path / "cli"),
                                           "--auth-secret", secret_name])
        assert result.exit_code == 0, result.output
        gets = [request for request in server.requests if request.method == "GET"]
        errors = []
        for kwargs in [{"auth_secret": denied}, {"auth_secret": "projects/p/secrets/gone/versions/2"},
                       {"auth_secret": secret_name, "auth_header_env": "FETCH_AUTH"}]:
            with pytest.raises((DeepFaceError, SettingError)) as error:
                fetch([server.url("d/")], tmp_path / "refused", **kwargs)
            errors.append(str(error.value))
        assert len(server.requests) == len(gets)  # refused secrets, exclusive settings: nothing sent
        # not read for a source that is not http(s)
        requests_before = len(secrets.requests)
        fetch([str(out / "b.txt")], tmp_path / "local", auth_secret=denied)
        assert len(secrets.requests) == requests_before

    assert list(manifest["files"]) == ["MD5SUMS", "a.bin", "b.txt"]
    assert (out / "a.bin").read_bytes() == DATA
    assert gets and all(request.headers.get("X-Secret") == SECRET for request in gets)
    assert fingerprint.startswith("http 3 files sha256:")
    assert "roles/secretmanager.secretAccessor" in errors[0] and denied in errors[0]
    assert "not found (HTTP 404)" in errors[1]
    assert "either auth_header_env or auth_secret" in errors[2]
    captured = capsys.readouterr()
    texts = {"logs": caplog.text, "stdout": captured.out, "stderr": captured.err, "cli": result.output,
             "errors": "\n".join(errors), "manifest": json.dumps(manifest),
             "files": (all_output_bytes(out) + all_output_bytes(tmp_path / "cli")).decode("latin-1")}
    for where, text in texts.items():
        assert SECRET not in text, where
    assert secret_name in caplog.text  # the name may be logged


def test_redirect_to_another_host_does_not_carry_the_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("FETCH_AUTH", f"X-Secret: {SECRET}")
    with HttpFileServer({"a.bin": DATA}) as mirror, HttpFileServer() as origin:
        origin.redirects["a.bin"] = mirror.url("a.bin", host="localhost")
        fetch([origin.url("a.bin")], tmp_path / "out", auth_header_env="FETCH_AUTH")
        assert origin.gets("a.bin")[0].headers["X-Secret"] == SECRET
        assert "X-Secret" not in mirror.gets("a.bin")[0].headers
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA


def test_http_prefix_is_listed_by_its_md5sums(http_server, tmp_path):
    files = {"a.bin": DATA, "sub/b c.txt": SMALL}
    http_server.files = {f"d/{name}": data for name, data in files.items()} | {"d/MD5SUMS": md5sums(files)}
    manifest = fetch([http_server.url("d/")], tmp_path / "out")
    assert list(manifest["files"]) == ["MD5SUMS", "a.bin", "sub/b c.txt"]
    assert (tmp_path / "out" / "sub" / "b c.txt").read_bytes() == SMALL
    assert manifest["files"]["sub/b c.txt"]["verified"] == "MD5SUMS"


def test_http_prefix_refused_is_reported_as_refused_not_as_missing_md5sums(tmp_path, monkeypatch):
    """A prefix behind a login: its MD5SUMS answers 401 (no header) or 403 (wrong header); the error says
    so, with the auth_header_env hint, not that there is no MD5SUMS file. With the right header it lists."""
    files = {"a.bin": DATA}
    with HttpFileServer({"d/a.bin": DATA, "d/MD5SUMS": md5sums(files)},
                        required_header=("X-Secret", SECRET)) as server:
        with pytest.raises(DeepFaceError) as error:
            fetch([server.url("d/")], tmp_path / "no-header")
        message = str(error.value)
        assert message.startswith(f"cannot list {server.url('d/')}")
        assert f"{server.url('d/MD5SUMS')} refused access (HTTP 401)" in message
        assert "auth_header_env=FETCH_AUTH" in message
        assert "there is no MD5SUMS" not in message

        monkeypatch.setenv("FETCH_AUTH", "X-Secret: wrong-value-xyz")
        with pytest.raises(DeepFaceError, match=r"refused access \(HTTP 403\): the header from \$FETCH_AUTH was "
                                                r"sent but refused") as error:
            fetch([server.url("d/")], tmp_path / "wrong-header", auth_header_env="FETCH_AUTH")
        assert "wrong-value-xyz" not in str(error.value)
        assert not (tmp_path / "wrong-header" / "a.bin").exists()

        monkeypatch.setenv("FETCH_AUTH", f"X-Secret: {SECRET}")
        manifest = fetch([server.url("d/")], tmp_path / "out", auth_header_env="FETCH_AUTH")
    assert list(manifest["files"]) == ["MD5SUMS", "a.bin"]
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA


@pytest.mark.parametrize("status", [500, 502])
def test_http_prefix_server_error_is_reported_with_its_status(http_server, tmp_path, status):
    http_server.files = {"d/a.bin": SMALL, "d/MD5SUMS": md5sums({"a.bin": SMALL})}
    http_server.statuses["d/MD5SUMS"] = status
    with pytest.raises(DeepFaceError) as error:
        fetch([http_server.url("d/")], tmp_path / "out")
    assert f"HTTP {status} from {http_server.url('d/MD5SUMS')}" in str(error.value)
    assert "there is no MD5SUMS" not in str(error.value)
    del http_server.statuses["d/MD5SUMS"]
    assert list(fetch([http_server.url("d/")], tmp_path / "out")["files"]) == ["MD5SUMS", "a.bin"]


# ---------------------------------------------------------------------------------------------------- resume


def test_interrupted_download_resumes_with_range_on_rerun(http_server, tmp_path):
    http_server.files = {"a.bin": DATA}
    http_server.cut("a.bin", 100_000)
    out = tmp_path / "out"

    with pytest.raises(DeepFaceError, match=r"a\.bin.*stopped after 100000 bytes.*run the same command again"):
        fetch([http_server.url("a.bin")], out, retries=0)
    assert (out / "a.bin.part").read_bytes() == DATA[:100_000]
    assert not (out / "a.bin").exists() and not (out / "manifest.json").exists()

    manifest = fetch([http_server.url("a.bin")], out, md5=md5(DATA))
    requests = http_server.gets("a.bin")
    assert [r.headers.get("Range") for r in requests] == [None, "bytes=100000-"]
    assert (out / "a.bin").read_bytes() == DATA
    assert manifest["files"]["a.bin"]["md5"] == md5(DATA)
    assert manifest["files"]["a.bin"]["verified"] == "md5-option"
    assert not (out / "a.bin.part").exists()


def test_interruption_is_resumed_within_one_run(http_server, tmp_path):
    http_server.files = {"a.bin": DATA}
    http_server.cut("a.bin", 64_000)
    fetch([http_server.url("a.bin")], tmp_path / "out", retries=1)
    assert [r.headers.get("Range") for r in http_server.gets("a.bin")] == [None, "bytes=64000-"]
    assert (tmp_path / "out" / "a.bin").read_bytes() == DATA


def test_server_ignoring_range_means_a_full_download(http_server, tmp_path, caplog):
    http_server.files = {"a.bin": DATA}
    http_server.ignore_range = True
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin.part").write_bytes(DATA[:50_000])
    with caplog.at_level(logging.INFO, logger="deepface"):
        fetch([http_server.url("a.bin")], out)
    assert (out / "a.bin").read_bytes() == DATA
    assert "ignored the Range request" in caplog.text


def test_complete_partial_file_is_finished_without_transfer(http_server, tmp_path):
    http_server.files = {"a.bin": DATA}
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.bin.part").write_bytes(DATA)  # interrupted between the last byte and the rename
    fetch([http_server.url("a.bin")], out, md5=md5(DATA))
    assert (out / "a.bin").read_bytes() == DATA
    assert http_server.gets("a.bin")[0].headers["Range"] == f"bytes={len(DATA)}-"  # answered 416, no body


# ---------------------------------------------------------------------------------------------------- MD5


def test_md5_option(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(SMALL)
    manifest = fetch([str(source)], tmp_path / "ok", md5=md5(SMALL).upper())
    assert manifest["files"]["a.bin"]["verified"] == "md5-option"

    wrong = "0" * 32
    with pytest.raises(DeepFaceError) as error:
        fetch([str(source)], tmp_path / "bad", md5=wrong)
    message = str(error.value)
    assert "a.bin" in message and wrong in message and md5(SMALL) in message and "as md5" in message
    assert not (tmp_path / "bad" / "a.bin").exists() and not (tmp_path / "bad" / "a.bin.part").exists()


def test_md5sums_mismatch_deletes_the_bad_file(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    (root / "a.bin").write_bytes(SMALL)
    (root / "MD5SUMS").write_text(f"{md5(b'other')} *a.bin\n")  # binary-mode md5sum line
    out = tmp_path / "out"
    with pytest.raises(
        DeepFaceError, match=rf"MD5 mismatch for a\.bin.*expected {md5(b'other')} \(MD5SUMS\), got {md5(SMALL)}"
    ):
        fetch([str(root / "a.bin")], out)
    assert not (out / "a.bin").exists() and not (out / "a.bin.part").exists()
    assert not (out / "manifest.json").exists()


def test_known_vggface2_name_with_wrong_content_is_refused(tmp_path):
    source = tmp_path / "vggface2_test.tar.gz"
    source.write_bytes(SMALL)
    with pytest.raises(DeepFaceError) as error:
        fetch([str(source)], tmp_path / "out")
    message = str(error.value)
    assert "vggface2_test.tar.gz" in message
    assert "bb7a323824d1004e14e00c23974facd3" in message and md5(SMALL) in message
    assert "as md5" in message and "MD5SUMS" in message
    assert not (tmp_path / "out" / "vggface2_test.tar.gz").exists()
    # a deliberate non-release file with that name is accepted with its own checksum
    manifest = fetch([str(source)], tmp_path / "out", md5=md5(SMALL))
    assert manifest["files"]["vggface2_test.tar.gz"]["verified"] == "md5-option"


def test_rerun_is_idempotent_and_replaces_a_bad_present_file(http_server, tmp_path, caplog):
    http_server.files = {"a.bin": DATA, "MD5SUMS": md5sums({"a.bin": DATA})}
    out = tmp_path / "out"
    first = fetch([http_server.url("a.bin")], out)
    manifest_bytes = (out / "manifest.json").read_bytes()

    with caplog.at_level(logging.INFO, logger="deepface"):
        second = fetch([http_server.url("a.bin")], out)
    assert second == first and (out / "manifest.json").read_bytes() == manifest_bytes
    assert len(http_server.gets("a.bin")) == 1  # not downloaded again
    assert "a.bin already present" in caplog.text

    (out / "a.bin").write_bytes(b"damaged")
    fetch([http_server.url("a.bin")], out)
    assert (out / "a.bin").read_bytes() == DATA
    assert len(http_server.gets("a.bin")) == 2


# ---------------------------------------------------------------------------------------------------- errors


def _bad_md5sums(root: Path) -> str:
    (root / "a.bin").write_bytes(SMALL)
    (root / "MD5SUMS").write_text("not a checksum line\n")
    return str(root / "a.bin")


def _out_under_a_file(root: Path) -> str:
    (root / "a.bin").write_bytes(SMALL)
    (root / "blocker").write_text("a file, not a directory")
    return str(root / "a.bin")


@pytest.mark.parametrize(
    "make_source, kwargs, expected",
    [
        (lambda root: str(root / "missing.bin"), {}, r"source file .*missing\.bin does not exist"),
        (lambda root: "s3://bucket/a.bin", {}, r"unsupported source 's3://bucket/a\.bin'"),
        (lambda root: "ftp://user:pw@host/a.bin", {}, r"unsupported source 'ftp://host/a\.bin'"),
        (lambda root: (root / "empty").mkdir() or str(root / "empty"), {}, r"no files under .*empty"),
        (_bad_md5sums, {}, r"MD5SUMS line 1 is not in md5sum format"),
        (lambda root: str(root), {"md5": "0" * 32}, r"md5='0+': applies to a single file"),
        (lambda root: str(root / "a.bin"), {"md5": "xyz"}, r"md5='xyz': must be text matching"),
        (lambda root: str(root), {"auth_header_env": "FETCH_TEST_UNSET"}, r"FETCH_TEST_UNSET.*not set"),
        (lambda root: str(root), {"out_dir": "gs://bucket/out"}, r"must be a local directory"),
        (_out_under_a_file, {"out_dir": "blocker/out"}, r"cannot write .*blocker.*choose another output"),
    ],
    ids=["missing-file", "unsupported-scheme", "unsupported-scheme-redacted", "empty-prefix", "bad-md5sums",
         "md5-with-prefix", "md5-not-hex", "auth-env-unset", "remote-out", "disk-write"],
)
def test_bad_inputs_give_clear_errors(tmp_path, monkeypatch, make_source, kwargs, expected):
    monkeypatch.delenv("FETCH_TEST_UNSET", raising=False)
    root = tmp_path / "src"
    root.mkdir()
    source = make_source(root)
    out_dir = kwargs.pop("out_dir", str(tmp_path / "out"))
    out_dir = out_dir if "://" in out_dir or os.path.isabs(out_dir) else str(root / out_dir)
    with pytest.raises(DeepFaceError, match=expected):
        fetch([source], out_dir, **kwargs)


def test_http_errors_name_the_url_without_secrets(http_server, tmp_path):
    http_server.files = {"d/a.bin": SMALL}
    with pytest.raises(DeepFaceError) as error:
        fetch([http_server.url("d/missing.bin").replace("://", "://me:pw@") + "?token=tok"], tmp_path / "out")
    assert str(error.value).startswith(f"{http_server.url('d/missing.bin')} not found (HTTP 404)")
    with pytest.raises(DeepFaceError, match=r"cannot list .*d/: HTTP has no directory listing"):
        fetch([http_server.url("d/")], tmp_path / "out")


def test_names_escaping_the_output_directory_are_refused(http_server, tmp_path):
    http_server.files = {"d/MD5SUMS": f"{md5(SMALL)}  ../evil.bin\n".encode(), "evil.bin": SMALL}
    with pytest.raises(DeepFaceError, match=r"refusing file name '\.\./evil\.bin'"):
        fetch([http_server.url("d/")], tmp_path / "out")
    assert not (tmp_path / "evil.bin").exists()


def test_two_sources_with_the_same_name_are_refused(tmp_path):
    for folder in ["x", "y"]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.bin").write_bytes(folder.encode())
    with pytest.raises(DeepFaceError, match=r"two sources give the same file name 'a\.bin'"):
        fetch([str(tmp_path / "x" / "a.bin"), str(tmp_path / "y" / "a.bin")], tmp_path / "out")


def test_redact_uri():
    assert redact_uri("https://u:p@Host:8443/a/b.tgz?X-Amz-Credential=c&v=2&access_token=t#frag") == (
        "https://Host:8443/a/b.tgz?v=2"
    )
    assert redact_uri("gs://bucket/a b") == "gs://bucket/a b"
    assert redact_uri("/local/path?x") == "/local/path?x"


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(SMALL)
    runner = CliRunner()
    result = runner.invoke(main, ["fetch", "--source", str(source), "--out", str(tmp_path / "out"),
                                  "--md5", md5(SMALL)])
    assert result.exit_code == 0, result.output
    assert "fetched 1 file(s)" in result.output
    assert read_manifest(tmp_path / "out")["files"]["a.bin"]["verified"] == "md5-option"

    result = runner.invoke(main, ["fetch", "--source", str(tmp_path / "nope.bin"), "--out", str(tmp_path / "o2")])
    assert result.exit_code == 1
    assert "nope.bin does not exist" in result.output and "Traceback" not in result.output
