"""`consentgate keys ...` and `consentgate serve`, as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.test_cli import cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    assert cli("init", db=db).returncode == 0
    made = cli("keys", "create", "--name", "web backend", "--scope", "ingest",
               "--scope", "decide", "--json", db=db)  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["scopes"] == ["decide", "ingest"]
    assert key["token"].startswith(f"cg_{key['key_id']}_")
    listed = cli("keys", "list", "--json", db=db)
    assert json.loads(listed.stdout)[0]["key_id"] == key["key_id"]
    secret = key["token"].rsplit("_", 1)[-1]
    assert secret not in listed.stdout
    assert secret not in Path(tmp_path / "l.db").read_bytes().decode("latin-1")  # hash only
    assert cli("keys", "revoke", key["key_id"], db=db).returncode == 0
    assert json.loads(cli("keys", "list", "--json", db=db).stdout)[0]["revoked"]
    bad = cli("keys", "create", "--name", "x", "--scope", "root", db=db)
    assert bad.returncode == 2
    assert "scopes" in bad.stderr
    assert "root" in bad.stderr
    unknown = cli("keys", "revoke", "nope", db=db)
    assert unknown.returncode == 2
    assert "key_id" in unknown.stderr


def test_serve_answers_and_honours_revocation(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'l.db'}"
    assert cli("init", db=db).returncode == 0
    key = json.loads(cli("keys", "create", "--name", "d", "--scope", "decide", "--json",
                         db=db).stdout)  # fmt: skip
    port = free_port()
    env = {**os.environ, "CONSENTGATE_DB": db, "CONSENTGATE_KEY_CACHE_SECONDS": "0"}
    server = subprocess.Popen(
        [sys.executable, "-m", "consentgate", "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"{base}/.well-known/gpc.json").json()["gpc"] is True
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        auth = {"Authorization": f"Bearer {key['token']}"}
        url = f"{base}/v1/subjects/m1/decision?purpose=ai_training"
        assert httpx.get(url, headers=auth).json()["reason"] == "unknown_subject"
        assert cli("keys", "revoke", key["key_id"], db=db).returncode == 0
        assert httpx.get(url, headers=auth).status_code == 401
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "consentgate"
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err


def test_serve_refuses_a_database_without_a_ledger(tmp_path: Path) -> None:
    run = cli("serve", "--port", str(free_port()), db=f"sqlite:///{tmp_path / 'empty.db'}")
    assert run.returncode == 2
    assert "consentgate init" in run.stderr
