"""Settings: defaults, file, environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from coffeebus.settings import MultiLoginPolicy, SettingsError, load_settings


def test_defaults_are_the_seed_ports() -> None:
    s = load_settings(env={})
    assert (s.gateway.tcp_port, s.gateway.ws_port, s.api.port) == (8000, 8001, 18080)
    assert s.gateway.login_timeout_s == 15.0
    assert s.gateway.multi_login is MultiLoginPolicy.KICK_SAME_TYPE
    assert s.mongo.server == "auto"


def test_file_then_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "cb.toml"
    cfg.write_text('[gateway]\ntcp_port = 9000\nws_port = 9001\n[api]\napi_keys = ["k1"]\n')
    env = {
        "COFFEEBUS_GATEWAY__TCP_PORT": "9100",
        "KAFKA_BOOTSTRAP_SERVERS": "10.0.0.1:9092",
        "REDIS_URL": "redis://127.0.0.1:6390/1",
        "MONGO_URL": "mongodb://127.0.0.1:27018",
        "COFFEEBUS_GATEWAY__MULTI_LOGIN": "allow_all",
        "COFFEEBUS_MONGO__SERVER": "mongodb",
    }
    s = load_settings(cfg, env=env)
    assert s.gateway.tcp_port == 9100
    assert s.gateway.ws_port == 9001
    assert s.api.api_keys == ("k1",)
    assert s.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert s.redis.url == "redis://127.0.0.1:6390/1"
    assert s.mongo.url == "mongodb://127.0.0.1:27018"
    assert s.gateway.multi_login is MultiLoginPolicy.ALLOW_ALL
    assert s.mongo.server == "mongodb"


def test_config_path_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "cb.toml"
    cfg.write_text("[log]\nformat = 'json'\n")
    assert load_settings(env={"COFFEEBUS_CONFIG": str(cfg)}).log.format == "json"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"COFFEEBUS_GATEWAY__TCP_PORT": "eighty"}, "$.gateway.tcp_port"),
        ({"COFFEEBUS_GATEWAY__TCP_PORT": "70000"}, "$.gateway.tcp_port"),
        ({"COFFEEBUS_GATEWAY__NO_SUCH_FIELD": "1"}, "no_such_field"),
        ({"COFFEEBUS_NOSECTION__X": "1"}, "unknown settings section 'nosection'"),
        ({"COFFEEBUS_GATEWAY__MULTI_LOGIN": "sometimes"}, "$.gateway.multi_login"),
        ({"COFFEEBUS_MONGO__SERVER": "ferretdb"}, "$.mongo.server"),
    ],
)
def test_bad_environment_is_named(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    assert fragment in str(info.value)


def test_bad_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[gateway]\nmax_frame_size = 8\n")
    with pytest.raises(SettingsError, match=r"bad\.toml: .*max_frame_size"):
        load_settings(cfg, env={})
    cfg.write_text("[gateway\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(cfg, env={})
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "missing.toml", env={})


def test_gate_id_is_filled_in_and_topic_safe() -> None:
    s = load_settings(env={}).with_gate_id()
    assert s.gateway.gate_id
    assert all(c.isalnum() or c in "-_" for c in s.gateway.gate_id)
    named = load_settings(env={"COFFEEBUS_GATEWAY__GATE_ID": "gate-a"}).with_gate_id()
    assert named.gateway.gate_id == "gate-a"
