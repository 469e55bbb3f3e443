"""Password hashes, tokens, settings defaults and the state enums: no server needed."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from detlite.api.enums import CheckpointState, ExperimentState
from detlite.master import Settings, security


def test_password_hashes_are_salted_scrypt_and_verify() -> None:
    first, second = security.hash_password("pw"), security.hash_password("pw")
    assert first is not None and second is not None
    assert first != second  # a random salt per hash
    assert first.startswith(f"scrypt${security.SCRYPT_N}${security.SCRYPT_R}$")
    assert security.verify_password("pw", first) and security.verify_password("pw", second)
    assert not security.verify_password("pW", first)
    assert not security.verify_password("", first)


def test_the_empty_password_is_hashed_and_the_legacy_null_matches_only_it() -> None:
    stored = security.hash_password("")
    assert stored.startswith(f"scrypt${security.SCRYPT_N}$")
    assert security.verify_password("", stored) and not security.verify_password(" ", stored)
    assert not security.needs_rehash(stored)
    # NULL, the marker older databases hold for the empty password, still means it.
    assert security.verify_password("", None)
    assert not security.verify_password(" ", None)
    assert security.needs_rehash(None)


def test_the_dummy_hash_matches_no_password() -> None:
    assert not security.verify_password("", security.DUMMY_HASH)
    assert not security.needs_rehash(security.DUMMY_HASH)


@pytest.mark.parametrize("stored", ["", "bcrypt$1$2$3$a$b", "scrypt$x$8$1$AA==$AA==", "scrypt$1"])
def test_malformed_stored_hashes_match_nothing(stored: str) -> None:
    assert not security.verify_password("anything", stored)


def test_tokens_are_random_and_stored_as_sha256() -> None:
    token = security.new_token()
    assert len(token) >= 43 and token != security.new_token()
    assert security.hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


def test_settings_defaults_follow_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.db_url == f"sqlite:///{tmp_path / 'detlite' / 'master.db'}"
    assert settings.storage_path == tmp_path / "detlite" / "checkpoints"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.token_ttl == dt.timedelta(days=30)
    assert settings.url == "http://127.0.0.1:8080"
    assert Settings(host="::1", port=1).url == "http://[::1]:1"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert Settings().storage_path == Path.home() / ".local" / "share" / "detlite" / "checkpoints"
    with pytest.raises(ValidationError):
        Settings(port=70000)
    with pytest.raises(ValidationError):
        Settings(token_ttl=dt.timedelta(0))


def test_state_enums_parse_names_and_proto_numbers() -> None:
    assert CheckpointState.parse(2) is CheckpointState.COMPLETED
    assert CheckpointState.parse("2") is CheckpointState.COMPLETED
    assert CheckpointState.parse("completed") is CheckpointState.COMPLETED
    assert CheckpointState.parse("STATE_DELETED") is CheckpointState.DELETED
    assert CheckpointState.DELETED.number == 4
    assert ExperimentState.parse(6) is ExperimentState.COMPLETED
    assert ExperimentState.STOPPING_KILLED.number == 12
    assert ExperimentState.CANCELED.terminal and not ExperimentState.PAUSED.terminal
    with pytest.raises(ValueError, match="STATE_COMPLETED \\(2\\)"):
        CheckpointState.parse(9)
