"""Settings: config.yaml, environment overrides, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from iot_platform.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_config_yaml_holds_exactly_the_defaults() -> None:
    assert load_settings(REPO / "config.yaml") == Settings()


def test_config_yaml_has_every_section_of_the_design() -> None:
    text = (REPO / "config.yaml").read_text()
    for section in Settings.model_fields:
        assert f"\n{section}:" in text


def test_iot_section_key_variables_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("api:\n  port: 9000\neventstore:\n  snapshot_every: 7\n")
    monkeypatch.setenv("IOT_API__PORT", "9100")
    settings = load_settings(config)
    assert settings.api.port == 9100
    assert settings.eventstore.snapshot_every == 7


def test_conventional_variable_names_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_DB_URL", "postgresql://iot:pw@db:5432/iot")
    monkeypatch.setenv("KAFKA_BROKERS", "k1:9092, k2:9092")
    monkeypatch.setenv("TIMESERIES_DB_URL", "http://influx:8086")
    monkeypatch.setenv("IOT_TIMESERIES__BACKEND", "influxdb")
    settings = load_settings()
    assert settings.eventstore.url == "postgresql://iot:pw@db:5432/iot"
    assert settings.streaming.brokers == ["k1:9092", "k2:9092"]
    assert settings.timeseries.url == "http://influx:8086"


def test_the_iot_prefixed_name_beats_the_conventional_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICE_DB_URL", "postgresql://a/b")
    monkeypatch.setenv("IOT_EVENTSTORE__URL", "sqlite:///x.db")
    assert load_settings().eventstore.url == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("api:\n  port: 70000\n", "api.port"),
        ("eventstore:\n  snapshot_every: lots\n", "eventstore.snapshot_every"),
        ("eventstore:\n  url: mysql://x\n", "eventstore.url"),
        ("streaming:\n  backend: rabbit\n", "streaming.backend"),
        ("api:\n  prot: 80\n", "api.prot"),
        ("timeseries:\n  backend: influxdb\n", "timeseries.url"),
        ("nonsense:\n  a: 1\n", "nonsense"),
        ("security:\n  encryption_key: short\n", "security.encryption_key"),
        ("lorawan:\n  net_id: xyz\n", "lorawan.net_id"),
        ("lorawan:\n  rx2_data_rate: SF13BW125\n", "lorawan.rx2_data_rate"),
        ("mqtt:\n  broker_url: mqtts://h:8883\n", "mqtt.broker_url"),
        ("telemetry:\n  max_nesting_depth: 500\n", "telemetry.max_nesting_depth"),
        ("telemetry:\n  max_payload_items: 0\n", "telemetry.max_payload_items"),
        ("mqtt:\n  stall_seconds: 0\n", "mqtt.stall_seconds"),
        ("rate_limits:\n  login_per_username:\n    burst: 0\n", "rate_limits.login_per_username.burst"),
        ("rate_limits:\n  device_readings:\n    per_second: fast\n", "rate_limits.device_readings.per_second"),
        ("rate_limits:\n  login_per_client:\n    per_second: 0\n", "rate_limits.login_per_client.per_second"),
        ("rate_limits:\n  credential_failures_per_client:\n    per_second: .inf\n",
         "rate_limits.credential_failures_per_client.per_second"),
        ("rate_limits:\n  logins: 5\n", "rate_limits.logins"),
        ("firmware:\n  store_path: ./firmware_store\n", "firmware"),
        ("edge:\n  gateway_enabled: false\n", "edge"),
        ("analytics:\n  anomaly_detection: true\n", "analytics.anomaly_detection"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    message = str(bad.value)
    assert "\n" not in message
    assert message.startswith(f"bad config value {key}:")


def test_a_rejected_secret_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("security:\n  ca_key_passphrase: [hunter2]\n")
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    assert "security.ca_key_passphrase" in str(bad.value)
    assert "hunter2" not in str(bad.value)


def test_secrets_do_not_show_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_TIMESERIES__TOKEN", "s3cr3t-token")
    settings = load_settings()
    assert settings.timeseries.token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(settings)


def test_kafka_brokers_from_the_environment_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_STREAMING__BROKERS", "10.0.0.1:9092, 10.0.0.2:9092")
    assert load_settings(None).streaming.brokers == ["10.0.0.1:9092", "10.0.0.2:9092"]
    monkeypatch.setenv("KAFKA_BROKERS", "k1:9092")
    monkeypatch.delenv("IOT_STREAMING__BROKERS")
    assert load_settings(None).streaming.brokers == ["k1:9092"]


def test_an_undecodable_environment_map_stops_start_up_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOT_STREAMING__TOPICS", "not-json")
    with pytest.raises(ConfigError) as refused:
        load_settings(None)
    assert "streaming" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("yaml_text", [
    "mqtt:\n  broker_url: mqtt://0.0.0.0:1883\n",
    "security:\n  allow_anonymous_devices: always\n",
])
def test_anonymous_devices_off_loopback_stop_start_up_naming_the_key(tmp_path: Path, yaml_text: str) -> None:
    """The default admits devices without credentials, which only a loopback listener may."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    assert "\n" not in str(bad.value)
    assert str(bad.value).startswith("bad config value security.allow_anonymous_devices:")


@pytest.mark.parametrize("broker_url", ["mqtt://127.0.0.1:1883", "mqtt://localhost:1883", "mqtt://[::1]:1883"])
def test_anonymous_devices_are_allowed_on_loopback(tmp_path: Path, broker_url: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  broker_url: {broker_url}\n")
    assert load_settings(config).security.allow_anonymous_devices == "loopback"


@pytest.mark.parametrize("yaml_text", [
    "mqtt:\n  broker_url: mqtt://0.0.0.0:1883\nsecurity:\n  allow_anonymous_devices: never\n",
    "mqtt:\n  broker_url: mqtt://0.0.0.0:1883\nsecurity:\n  mutual_tls_required: true\n",
    "mqtt:\n  broker_url: mqtt://mosquitto:1883\n  embedded_broker: false\n",
])
def test_a_listener_off_loopback_is_fine_when_it_admits_no_anonymous_device(tmp_path: Path, yaml_text: str) -> None:
    """Credentials always asked, a client certificate required, or someone else's broker."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml_text)
    load_settings(config)
