"""busd.auth and busd.zap without a master: key files, key dirs, roles, refusal logs."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import zmq

from busd import auth
from busd.auth import KeyFileError, RefusalLog, Role
from busd.client.keygen import write_key_pair
from busd.zap import KeyRing


def pair(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(mode=0o700, exist_ok=True)
    return write_key_pair(directory, name)


def test_a_secret_key_loads_with_its_public_half(tmp_path: Path) -> None:
    public, secret = pair(tmp_path / "k", "me")
    keys = auth.load_secret(secret)
    assert keys.public == auth.load_public(public)
    assert len(keys.secret) == auth.Z85_KEY_LENGTH


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secret_key_others_may_touch_is_refused(tmp_path: Path, mode: int) -> None:
    _, secret = pair(tmp_path / "k", "me")
    secret.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:04o}.*chmod 600"):
        auth.load_secret(secret)


def test_client_keys_need_both_halves_and_read_the_environment(tmp_path: Path) -> None:
    public, secret = pair(tmp_path / "k", "me")
    assert auth.client_keys(env={}) is None
    with pytest.raises(KeyFileError, match="needs both"):
        auth.client_keys(server_key=public, env={})
    with pytest.raises(KeyFileError, match="needs both"):
        auth.client_keys(env={"BUSD_CURVE_SECRET": str(secret)})
    keys = auth.client_keys(env={"BUSD_SERVER_KEY": str(public),
                                 "BUSD_CURVE_SECRET": str(secret)})
    assert keys is not None
    assert keys.server == keys.own.public


def test_a_key_dir_with_a_bad_certificate_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    (directory / "junk.key").write_text("no key in here\n")
    with pytest.raises(KeyFileError, match=r"junk\.key"):
        auth.load_key_dir(directory)


def test_the_key_ring_follows_its_dirs(tmp_path: Path) -> None:
    full, readonly = tmp_path / "full", tmp_path / "ro"
    writer, _ = pair(tmp_path / "w", "writer")
    reader, _ = pair(tmp_path / "r", "reader")
    for directory in (full, readonly):
        directory.mkdir(mode=0o700)
    shutil.copy(writer, full)
    shutil.copy(reader, readonly)
    ring = KeyRing(full, readonly)
    writer_key, reader_key = auth.load_public(writer), auth.load_public(reader)
    assert ring.role(writer_key) is Role.FULL
    assert ring.role(reader_key) is Role.READ_ONLY

    (readonly / reader.name).unlink()
    os.utime(readonly, ns=(1, 1))  # a new mtime, whatever the clock's resolution
    assert ring.role(reader_key) is None
    assert ring.counts() == {"full": 1, "read_only": 0}


def test_the_key_ring_keeps_its_keys_when_a_dir_turns_bad(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    writer, _ = pair(tmp_path / "w", "writer")
    shutil.copy(writer, full)
    ring = KeyRing(full)
    (full / "junk.key").write_text("junk\n")
    os.utime(full, ns=(2, 2))
    with caplog.at_level(logging.ERROR):
        assert ring.role(auth.load_public(writer)) is Role.FULL
    assert "keeping the keys loaded before" in caplog.text


def test_refusals_are_logged_once_per_peer_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    refusals = RefusalLog("refused", interval=3600)
    with caplog.at_level(logging.WARNING, logger="busd.auth"):
        for _ in range(50):
            refusals.refused("peer-a", "no")
        refusals.refused("peer-b", "no")
    assert refusals.total == 51
    assert [r.getMessage() for r in caplog.records] == ["refused peer-a: no", "refused peer-b: no"]


def test_a_frame_without_a_user_id_is_a_local_peer() -> None:
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://auth-test")
        b.connect("inproc://auth-test")
        b.send(b"x")
        assert auth.peer_role(a.recv(copy=False)) == (Role.FULL, "local")
    finally:
        a.close(linger=0)
        b.close(linger=0)
        ctx.term()
