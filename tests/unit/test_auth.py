"""busd.core.auth and busd.security.zap without a master: key files, key dirs, roles, refusals."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
import zmq

from busd.client.ctl.keygen import write_key_pair
from busd.core import auth
from busd.core.auth import KeyFileError, RefusalLog, Role
from busd.security.zap import KeyRing


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
    keys = auth.client_keys(env={"BUSD_SERVER_KEY": str(public), "BUSD_CURVE_SECRET": str(secret)})
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
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
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
    with caplog.at_level(logging.WARNING, logger="busd.core.auth"):
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


def test_a_key_file_replaced_in_place_counts_at_the_next_handshake(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    alice, _ = pair(tmp_path / "a", "alice")
    evil, _ = pair(tmp_path / "e", "evil")
    shutil.copy(alice, full / "alice.key")
    ring = KeyRing(full)
    alice_key, evil_key = auth.load_public(alice), auth.load_public(evil)
    assert ring.role(alice_key) is Role.FULL
    before = os.stat(full / "alice.key")
    dir_before = os.stat(full)
    shutil.copyfile(evil, full / "alice.key")  # cp: same inode, new content
    # As when both writes fall in one tick of the file system's clock.
    os.utime(full / "alice.key", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.utime(full, ns=(dir_before.st_atime_ns, dir_before.st_mtime_ns))
    assert os.stat(full / "alice.key").st_ino == before.st_ino
    assert ring.role(alice_key) is None, "the replaced key still gets in"
    assert ring.role(evil_key) is Role.FULL


def test_a_key_file_others_may_write_is_refused(tmp_path: Path) -> None:
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    alice, _ = pair(tmp_path / "a", "alice")
    shutil.copy(alice, full / "alice.key")
    (full / "alice.key").chmod(0o666)
    with pytest.raises(KeyFileError, match=r"alice\.key is writable by others"):
        auth.load_key_dir(full)
    with pytest.raises(KeyFileError, match="writable by others"):
        KeyRing(full)


def test_a_key_file_turned_unsafe_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    alice, _ = pair(tmp_path / "a", "alice")
    shutil.copy(alice, full / "alice.key")
    ring = KeyRing(full)
    (full / "alice.key").chmod(0o646)
    with caplog.at_level(logging.ERROR, logger="busd.security.zap"):
        for _ in range(20):
            ring.role(auth.load_public(alice))
    assert len([r for r in caplog.records if "writable by others" in r.getMessage()]) == 1


def test_refusals_of_fresh_peers_are_capped_overall(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    refusals = RefusalLog("refused", interval=60, lines=10)
    with caplog.at_level(logging.WARNING, logger="busd.core.auth"):
        for i in range(1000):
            refusals.refused(f"fresh-key-{i}", "no")
        assert len(caplog.records) == 10
        assert refusals.suppressed == 990
        clock[0] += 61
        refusals.refused("one-more", "no")
    assert refusals.total == 1001
    assert len(caplog.records) == 11
    assert "990 other refusals not logged" in caplog.records[-1].getMessage()
    assert refusals.suppressed == 0
