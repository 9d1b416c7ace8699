"""The configuration chain (sts_bridge.config) and private files (sts_bridge._files)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from sts_bridge._files import LockTimeout, atomic_write, file_lock, read_private_json
from sts_bridge._user_dirs import user_dir
from sts_bridge.config import (
    CA_BUNDLE_VARIABLES,
    DEFAULT_CLIENT_ID,
    Settings,
    load_settings,
    trusted_cas,
)
from sts_bridge.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("TERRAPI_", "STS_BRIDGE_")) or name in CA_BUNDLE_VARIABLES:
            monkeypatch.delenv(name)
    config = tmp_path / "config"
    monkeypatch.setenv("STS_BRIDGE_CONFIG_FILE", str(config))
    monkeypatch.setenv("STS_BRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    return config


def write_config(path: Path, text: str) -> None:
    path.write_text(text)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.client_id == DEFAULT_CLIENT_ID
    assert settings.scopes == ()
    assert settings.leeway == 60.0
    assert settings.verify is True
    assert settings.cache_dir == tmp_path / "cache"
    assert settings.profile == "default"


def test_explicit_beats_env_beats_profile(monkeypatch: pytest.MonkeyPatch, _env: Path) -> None:
    write_config(
        _env,
        "[default]\nissuer = https://file\nurl = https://api-file\nscopes = a b\n"
        "audience = aud-file\n",
    )
    monkeypatch.setenv("TERRAPI_ISSUER", "https://env")
    settings = load_settings(audience="aud-arg")
    assert settings.issuer == "https://env"
    assert settings.api_url == "https://api-file"
    assert settings.audience == "aud-arg"
    assert settings.scopes == ("a", "b")
    assert settings.source("issuer") == "env TERRAPI_ISSUER"
    assert settings.source("audience") == "argument"
    assert "profile 'default'" in settings.source("api_url")


def test_named_profile(monkeypatch: pytest.MonkeyPatch, _env: Path) -> None:
    write_config(_env, "[default]\nissuer = https://d\n[profile svc]\nissuer = https://s\n")
    monkeypatch.setenv("TERRAPI_PROFILE", "svc")
    assert load_settings().issuer == "https://s"
    assert load_settings(profile="default").issuer == "https://d"
    with pytest.raises(ConfigurationError) as info:
        load_settings(profile="nope")
    assert "svc" in str(info.value)


def test_missing_file_with_named_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRAPI_PROFILE", "prod")
    with pytest.raises(ConfigurationError, match="no configuration file"):
        load_settings()


def test_unreadable_or_unparsable_file_is_one_sentence(_env: Path) -> None:
    _env.mkdir()
    with pytest.raises(ConfigurationError, match="cannot be read") as info:
        load_settings()
    assert info.value.hint and "STS_BRIDGE_CONFIG_FILE" in info.value.hint
    _env.rmdir()
    for junk in (b"\xff\xfe\x00binary", b"no section header\n", b"[default]\n= no key\n"):
        _env.write_bytes(junk)
        with pytest.raises(ConfigurationError, match="cannot be parsed") as info:
            load_settings()
        assert info.value.hint and "INI" in info.value.hint


@pytest.mark.parametrize("xdg", [None, "", "   ", "/srv/xdg"])
def test_user_dirs_are_platformdirs_answers(
    monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    import platformdirs

    for variable in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        if xdg is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, xdg)
    assert Path(user_dir("cache")) == Path(platformdirs.user_cache_dir("sts-bridge"))
    assert Path(user_dir("config")) == Path(platformdirs.user_config_dir("sts-bridge"))


def test_require_names_every_place(_env: Path) -> None:
    settings = load_settings()
    with pytest.raises(ConfigurationError) as info:
        settings.require("issuer")
    text = str(info.value)
    assert "TERRAPI_ISSUER" in text and str(_env) in text and "issuer=" in text


def test_verify_and_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    bundle = certifi.where()
    assert load_settings(ca_bundle=bundle).verify == bundle
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(ca_bundle="/no/such/ca.pem")
    monkeypatch.setenv("TERRAPI_INSECURE", "yes")
    assert load_settings(ca_bundle="/no/such/ca.pem").verify is False  # not read: not used
    monkeypatch.setenv("TERRAPI_INSECURE", "maybe")
    with pytest.raises(ConfigurationError, match="TERRAPI_INSECURE"):
        load_settings()


def test_the_ca_rule_takes_the_first_bundle_in_its_order(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import certifi

    order = ["TERRAPI_CA_BUNDLE", *CA_BUNDLE_VARIABLES]
    assert order == ["TERRAPI_CA_BUNDLE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"]
    bundles = {}
    for name in order:
        bundles[name] = tmp_path / f"{name}.pem"
        bundles[name].write_bytes(Path(certifi.where()).read_bytes())
        monkeypatch.setenv(name, str(bundles[name]))
    for name in order:
        settings = load_settings()
        assert settings.verify == str(bundles[name])
        assert settings.source("ca_bundle") == f"env {name}"
        monkeypatch.delenv(name)
    assert load_settings().verify is True  # then the system's store
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError, match="REQUESTS_CA_BUNDLE"):  # named, checked
        load_settings()


def test_trusted_cas_gives_libraries_with_their_own_store_the_systems() -> None:
    import ssl

    system = trusted_cas(True)
    assert system is True or system == ssl.get_default_verify_paths().cafile
    assert trusted_cas(False) is False
    assert trusted_cas("/some/bundle.pem") == "/some/bundle.pem"


def test_secret_needs_client_id_and_repr_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRAPI_CLIENT_SECRET", "s3cr3t-value")
    with pytest.raises(ConfigurationError, match="client id"):
        load_settings()
    monkeypatch.setenv("TERRAPI_CLIENT_ID", "svc")
    monkeypatch.setenv("TERRAPI_TOKEN", "tok-value")
    settings = load_settings()
    assert settings.client_secret == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings) and "tok-value" not in repr(settings)
    assert "***" in repr(settings)


def test_token_is_never_read_from_the_file(_env: Path) -> None:
    write_config(_env, "[default]\ntoken = from-file\n")
    assert load_settings().token is None


def test_scopes_flow_and_leeway_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERRAPI_SCOPES", "gep,offline_access gep")
    monkeypatch.setenv("TERRAPI_FLOW", "Client_Credentials")
    monkeypatch.setenv("STS_BRIDGE_LEEWAY", "1.5")
    settings = load_settings()
    assert settings.scopes == ("gep", "offline_access")
    assert settings.flow == "client-credentials"
    assert settings.leeway == 1.5
    monkeypatch.setenv("TERRAPI_FLOW", "carrier-pigeon")
    with pytest.raises(ConfigurationError, match="unknown flow"):
        load_settings()
    monkeypatch.setenv("TERRAPI_FLOW", "mypkg.auth:make")
    assert load_settings().flow == "mypkg.auth:make"


def test_unknown_argument() -> None:
    with pytest.raises(TypeError):
        load_settings(colour="blue")


def test_settings_is_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.issuer = "x"  # type: ignore[misc]


# ------------------------------------------------------------- _files


def test_atomic_write_is_private_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.json"
    atomic_write(target, b'{"a": 1}')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert read_private_json(target) == {"a": 1}
    atomic_write(target, b'{"a": 2}')
    assert read_private_json(target) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]  # no temp files left
    assert read_private_json(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("{not json")
    with pytest.raises(ValueError):
        read_private_json(tmp_path / "bad")


def test_file_lock_is_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    inside = []
    overlap = []

    def work() -> None:
        with file_lock(lock, timeout=10):
            if inside:
                overlap.append(1)
            inside.append(1)
            time.sleep(0.02)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlap


def test_file_lock_held_by_another_process_times_out(tmp_path: Path) -> None:
    """A lock another process holds is LockTimeout after the timeout (0: one try);
    a TimeoutError raised by the locked work is not mistaken for one."""
    import subprocess
    import sys

    lock = tmp_path / "locks" / "x.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from sts_bridge._files import file_lock\n"
            f"with file_lock({str(lock)!r}):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for timeout in (0.0, 0.2):
            with (
                pytest.raises(LockTimeout, match="held by another process"),
                file_lock(lock, timeout=timeout),
            ):
                pytest.fail("the lock was taken twice")
    finally:
        holder.kill()
        holder.wait()
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert stat.S_IMODE(lock.parent.stat().st_mode) == 0o700
    with pytest.raises(TimeoutError) as info, file_lock(lock, timeout=0):
        raise TimeoutError("the network, not the lock")
    assert not isinstance(info.value, LockTimeout)
