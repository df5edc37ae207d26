import os
import stat

import pytest

from protect.settings import SettingsError, load_settings


def test_defaults_make_secret_and_paths(tmp_path):
    s = load_settings({"instance_path": str(tmp_path)}, environ={})
    secret_file = tmp_path / "secret_key"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert s.secret_key == secret_file.read_text().strip() and len(s.secret_key) >= 32
    assert s.database_url == f"sqlite:///{tmp_path / 'protect.db'}"
    # Read once and kept: a second start uses the same key.
    assert load_settings({"instance_path": str(tmp_path)}, environ={}).secret_key == s.secret_key


def test_environment_beats_config_file(tmp_path):
    (tmp_path / "config.toml").write_text('staff_idle_minutes = 10\nidle_minutes = 50\n')
    s = load_settings({"instance_path": str(tmp_path)}, environ={"PROTECT_IDLE_MINUTES": "70"})
    assert (s.staff_idle_minutes, s.idle_minutes) == (10, 70)


def test_settings_are_frozen(tmp_path):
    s = load_settings({"instance_path": str(tmp_path)}, environ={})
    with pytest.raises(Exception):
        s.debug = True


@pytest.mark.parametrize("environ, message", [
    ({"PROTECT_ENV": "production"}, "PROTECT_SECRET_KEY"),
    ({"PROTECT_ENV": "production", "PROTECT_SECRET_KEY": "x" * 40, "PROTECT_DEBUG": "1",
      "PROTECT_PUBLIC_URL": "https://p.example.org"}, "PROTECT_DEBUG"),
    ({"PROTECT_ENV": "production", "PROTECT_SECRET_KEY": "x" * 40,
      "PROTECT_PUBLIC_URL": "http://p.example.org"}, "https://"),
])
def test_production_refuses_unsafe_settings(tmp_path, environ, message):
    with pytest.raises(SettingsError, match=message):
        load_settings({"instance_path": str(tmp_path)}, environ=environ)


def test_production_with_safe_settings_starts(tmp_path):
    s = load_settings({"instance_path": str(tmp_path)}, environ={
        "PROTECT_ENV": "production", "PROTECT_SECRET_KEY": "x" * 40,
        "PROTECT_PUBLIC_URL": "https://p.example.org"})
    assert s.production and not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("environ, config, message", [
    ({"PROTECT_IDLE_MINUTES": "soon"}, None, "whole number"),
    ({"PROTECT_DEBUG": "maybe"}, None, "true or false"),
    ({"PROTECT_ENV": "staging"}, None, "PROTECT_ENV"),
    ({}, "nonsense = [", "not valid TOML"),
    ({}, 'colour = "blue"', "unknown setting"),
])
def test_bad_settings_have_clear_messages(tmp_path, environ, config, message):
    if config:
        (tmp_path / "config.toml").write_text(config)
    with pytest.raises(SettingsError, match=message):
        load_settings({"instance_path": str(tmp_path)}, environ=environ)


def test_master_key_generated_private(tmp_path):
    from protect.crypto.keyring import load_keyring
    ring = load_keyring(tmp_path)
    files = list((tmp_path / "keys").glob("*.key"))
    assert len(files) == 1 and files[0].stem == ring.newest.kid
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    assert load_keyring(tmp_path).newest.kid == ring.newest.kid
