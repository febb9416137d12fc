"""Typed settings: config.yaml, overridden by environment variables.

Precedence, highest first: ``IOT_<SECTION>__<KEY>`` variables, the conventional variable names
(DEVICE_DB_URL, TIMESERIES_DB_URL, MQTT_BROKER_URL, KAFKA_BROKERS, DEVICE_CA_CERT_PATH,
DEVICE_CA_KEY_PATH), the YAML file, then the defaults below. The defaults are the embedded,
nothing-installed setup and match config.yaml (a unit test holds them together).
This is the only module that reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from iot_platform.domain.errors import InvalidValue
from iot_platform.domain.lorawan.region import EU868_RX2_DATA_RATE, EU868_RX2_FREQUENCY_HZ, data_rate_index

CONVENTIONAL_ENV: dict[str, tuple[str, str]] = {
    "DEVICE_DB_URL": ("eventstore", "url"),
    "TIMESERIES_DB_URL": ("timeseries", "url"),
    "MQTT_BROKER_URL": ("mqtt", "broker_url"),
    "KAFKA_BROKERS": ("streaming", "brokers"),
    "DEVICE_CA_CERT_PATH": ("security", "ca_cert_path"),
    "DEVICE_CA_KEY_PATH": ("security", "ca_key_path"),
}


class Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class ApiSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    read_your_writes_timeout_seconds: float = Field(5.0, ge=0)
    max_page_size: int = Field(1000, ge=1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class EventStoreSettings(Section):
    url: str = "sqlite:///./data/iot-platform.db"
    snapshot_every: int = Field(100, ge=0, description="0 disables snapshots")
    pool_size: int = Field(10, ge=1)
    projection_batch_size: int = Field(500, ge=1)
    projection_poll_interval_seconds: float = Field(0.5, gt=0)
    projection_retry_seconds: float = Field(
        30.0, gt=0, description="how often a projection stalled on an event it cannot apply retries it")
    migrate_on_start: bool = True

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value


class MqttSettings(Section):
    enabled: bool = True
    embedded_broker: bool = True
    broker_url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["auto", "3.1.1", "5"] = "auto"
    username: str = ""
    password: SecretStr = SecretStr("")
    qos_level: int = Field(1, ge=0, le=2)
    keep_alive: int = Field(60, ge=1)
    client_id: str = "iot-platform"
    shared_subscription_group: str = ""
    """MQTT 5 ``$share`` group for several processes; empty: a plain persistent subscription."""
    session_expiry_seconds: int = Field(3600, ge=0)
    max_batch: int = Field(2000, ge=1)
    pipeline: int = Field(4, ge=1)
    reconnect_initial_seconds: float = Field(0.5, gt=0)
    reconnect_max_seconds: float = Field(30.0, gt=0)
    stall_seconds: float = Field(30.0, gt=0)
    """``/ready`` says ``mqtt: stalled`` when messages have waited this long with none handled."""
    tls_ca_file: str = ""
    """With ``mqtts://``: the CA chain the broker's certificate is checked against."""
    tls_cert_file: str = ""
    """The platform's own service certificate (mutual TLS); its CN is its MQTT username."""
    tls_key_file: str = ""
    tls_key_password: SecretStr = SecretStr("")
    """The passphrase of an encrypted ``tls_key_file`` (never logged)."""
    identity_property: str = ""
    """The MQTT 5 user property in which the broker stamps each message with its publisher's
    authenticated identity (tools/mosquitto/identity_plugin.c: ``iot-identity``). Set, a
    reading whose topic names another device than that identity is refused, whatever the ACL
    let through. Empty: the broker alone confines identities."""

    @field_validator("broker_url")
    @classmethod
    def _mqtt_url(cls, url: str, info: ValidationInfo) -> str:
        if not url.startswith(("mqtt://", "mqtts://")) or ":" not in url.split("://", 1)[1]:
            raise ValueError("must be mqtt://host:port or mqtts://host:port")
        if url.startswith("mqtts://") and info.data.get("embedded_broker", True):
            raise ValueError("the embedded broker speaks plain MQTT: mqtts:// needs mqtt.embedded_broker: false")
        return url

    @property
    def host(self) -> str:
        return self.broker_url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.broker_url.rsplit(":", 1)[1].rstrip("/"))

    @property
    def tls(self) -> bool:
        return self.broker_url.startswith("mqtts://")

    @property
    def mqtt5(self) -> bool:
        """The embedded broker speaks 3.1.1; anything else is taken to speak MQTT 5."""
        if self.protocol == "auto":
            return not self.embedded_broker
        return self.protocol == "5"


class CoapSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(5683, ge=1, le=65535)
    allow_unauthenticated: bool = True
    """Serve requests with neither OSCORE nor a ``?token=`` (a device token or API key), as
    long as ``security.allow_anonymous_devices`` allows anonymous devices (``loopback``: only
    while ``host`` is a loopback address)."""


class LorawanSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(1700, ge=1, le=65535)
    net_id: str = "000000"
    """The network's NetID (6 hex digits); OTAA DevAddrs are allocated under it."""
    deduplication_ms: int = Field(200, ge=0, le=5000)
    """How long copies of one frame from several gateways are gathered before it is handled."""
    rx1_delay_seconds: int = Field(1, ge=1, le=15)
    join_accept_delay_seconds: int = Field(5, ge=1, le=15)
    rx2_frequency_hz: int = Field(EU868_RX2_FREQUENCY_HZ, ge=863_000_000, le=870_000_000)
    """RX2, a second after RX1: where a downlink goes when RX1 is missed or the gateway refuses it."""
    rx2_data_rate: str = EU868_RX2_DATA_RATE
    """An EU868 LoRa data rate (``SF12BW125`` is DR0, the default every device starts with)."""
    downlink_power_dbm: int = Field(14, ge=0, le=30)
    adr_enabled: bool = True
    """Adaptive data rate for devices that set the ADR bit: LinkADRReq from their uplinks' SNR."""
    adr_margin_db: float = Field(10.0, ge=0, le=30)
    """The installation margin ADR keeps above what a data rate needs."""
    adr_history: int = Field(20, ge=1, le=64)
    """How many of a device's uplinks one ADR decision is taken over."""
    max_pending_frames: int = Field(10_000, ge=1)
    """Frames being gathered or handled at once; beyond this a flood is dropped and counted."""
    gateway_cache_seconds: float = Field(10.0, ge=0)
    """How long an unknown gateway stays unknown before the registry is asked again."""
    chirpstack_uplinks: bool = False
    """Also take uplinks decoded by an existing ChirpStack v4 (its MQTT integration)."""
    chirpstack_topic: str = "application/+/device/+/event/up"

    @field_validator("net_id")
    @classmethod
    def _net_id(cls, value: str) -> str:
        if len(value) != 6 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError("must be 6 hex digits")
        return value.lower()

    @field_validator("rx2_data_rate")
    @classmethod
    def _rx2_data_rate(cls, value: str) -> str:
        try:
            data_rate_index(value)
        except InvalidValue as exc:
            raise ValueError(exc.message) from None
        return value.upper()


class TelemetrySettings(Section):
    max_future_skew_seconds: float = Field(300.0, ge=0)
    reporting_interval_seconds: int = Field(60, ge=1)
    """The reporting interval devices are told at provisioning."""
    max_payload_bytes: int = Field(65536, ge=1)
    max_nesting_depth: int = Field(32, ge=1, le=200)
    """Containers inside containers in one JSON or CBOR payload (200: the JSON parser's own
    ceiling); a deeper payload is a rejected reading (``nesting_too_deep``)."""
    max_payload_items: int = Field(10_000, ge=1)
    """Values in one decoded payload; more is a rejected reading (``payload_too_large``)."""
    max_metrics_per_reading: int = Field(100, ge=1)
    max_batch_events: int = Field(1000, ge=1)
    dedup_window: int = Field(100_000, ge=0)
    device_cache_seconds: float = Field(30.0, ge=0)
    http_store_timeout_seconds: float = Field(10.0, gt=0)


class CommandSettings(Section):
    default_ttl_seconds: float = Field(3600.0, gt=0)
    max_ttl_seconds: float = Field(604_800.0, gt=0)
    expiry_sweep_interval_seconds: float = Field(1.0, gt=0)
    max_wait_seconds: float = Field(60.0, ge=0)
    wait_poll_interval_seconds: float = Field(0.5, gt=0)
    publish_timeout_seconds: float = Field(5.0, gt=0)

    @field_validator("max_ttl_seconds")
    @classmethod
    def _max_covers_default(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("default_ttl_seconds", 0):
            raise ValueError("must be at least default_ttl_seconds")
        return value


class TimeseriesSettings(Section):
    backend: Literal["embedded", "influxdb"] = "embedded"
    url: str = Field("sqlite:///./data/timeseries.db", validate_default=True)
    bucket: str = "sensor_data"
    org: str = "iot-platform"
    token: SecretStr = SecretStr("")
    retention_days: int = Field(30, ge=1)
    rollup_retention_days: int = Field(730, ge=1)
    batch_size: int = Field(5000, ge=1)
    flush_interval_ms: int = Field(100, ge=1)
    max_pending: int = Field(100_000, ge=1)
    retry_initial_seconds: float = Field(0.2, gt=0)
    retry_max_seconds: float = Field(10.0, gt=0)
    maintain_interval_seconds: float = Field(60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url_fits_backend(cls, url: str, info: ValidationInfo) -> str:
        backend = info.data.get("backend", "embedded")
        wanted = ("sqlite",) if backend == "embedded" else ("http://", "https://")
        if not url.startswith(wanted):
            raise ValueError(f"backend {backend} needs a {' or '.join(wanted)} URL")
        return url


class KafkaTopics(Section):
    sensor_data: str = "sensor-readings"
    alerts: str = "iot-alerts"
    commands: str = "device-commands"
    domain_events: str = "iot-domain-events"
    dead_letter: str = "iot-dead-letter"


WORKER_ROLES = ("storage", "state", "rules", "projections", "relay")
"""What ``iot-platform worker --role`` runs on its own; ``serve`` runs every one by default."""


class StreamingSettings(Section):
    backend: Literal["inprocess", "kafka"] = "inprocess"
    brokers: Annotated[list[str], NoDecode] = ["127.0.0.1:9092"]
    """``host:port,host:port`` in the environment (KAFKA_BROKERS), or a YAML list."""
    topics: KafkaTopics = KafkaTopics()
    consumer_group: str = Field("iot-platform", min_length=1)
    """Prefix of the consumer groups: ``<prefix>-storage``, ``<prefix>-projections``, ..."""
    max_attempts: int = Field(5, ge=1)
    """Tries of a failing batch before the readings that fail on their own are dead-lettered."""
    projections_source: Literal["store", "kafka"] = Field("store", validate_default=True)
    """Where projections read events: the event store, or the domain-events topic."""

    @field_validator("projections_source")
    @classmethod
    def _kafka_source_needs_kafka(cls, source: str, info: ValidationInfo) -> str:
        if source == "kafka" and info.data.get("backend") != "kafka":
            raise ValueError("kafka needs streaming.backend: kafka (the relay fills the topic)")
        return source

    @field_validator("brokers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value


class SecuritySettings(Section):
    certificate_authority: Literal["internal", "imported"] = "internal"
    ca_cert_path: str = "./data/pki/ca.crt"
    ca_key_path: str = "./data/pki/ca.key"
    ca_key_passphrase: SecretStr = SecretStr("")
    device_cert_validity_days: int = Field(365, ge=1)
    ca_key_type: Literal["ec", "rsa"] = "ec"
    """EC P-256, or RSA 2048, for the CA made by ``ca init`` (device keys made here are EC)."""
    renewal_overlap_hours: float = Field(24.0, ge=0)
    """A renewed device's previous certificate stays valid this long, then is revoked."""
    crl_path: str = "./data/pki/crl.pem"
    """Where the CRL is written on every change (brokers read it from here)."""
    mutual_tls_required: bool = False
    encryption_key: SecretStr = SecretStr("")
    """32 bytes as 64 hex digits, sealing secrets at rest (LoRaWAN keys). Empty: the key in
    ``encryption_key_file``, created on first start. Every process of one platform needs the same."""
    encryption_key_file: str = "./data/secrets/encryption.key"
    admin_api_key: SecretStr = SecretStr("")
    """An admin API key (``iotk_<id>_<secret>``) to create at start if absent: for automation.
    Empty: the first start makes one and prints it once."""
    token_ttl_seconds: int = Field(3600, ge=60, le=86400 * 30)
    allow_anonymous_devices: Literal["loopback", "never"] = "loopback"
    """Devices without credentials (MQTT with no username/password, CoAP with no token or
    OSCORE): ``loopback`` admits them only while every device listener is bound to a loopback
    address (Mosquitto 2.0's local-only convention, so ``make run`` needs no setup); start-up
    refuses a non-loopback listener with this setting named. ``never`` always asks for one."""

    @field_validator("encryption_key")
    @classmethod
    def _encryption_key(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and (len(secret) != 64 or any(c not in "0123456789abcdefABCDEF" for c in secret)):
            raise ValueError("must be 64 hex digits (32 bytes)")
        return value

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret and (not secret.startswith("iotk_") or secret.count("_") < 2 or len(secret) < 30):
            raise ValueError("must read iotk_<id>_<secret> (make one with: iot-platform apikey new)")
        return value


class AnalyticsSettings(Section):
    zscore_threshold: float = Field(3.0, gt=0)
    real_time_processing: bool = True
    """Runs the rule engine on the telemetry stream."""
    max_rule_states: int = Field(100_000, ge=100)
    rules_refresh_seconds: float = Field(5.0, gt=0)
    no_data_check_seconds: float = Field(1.0, gt=0)
    stream_buffer: int = Field(1000, ge=1)
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(5, ge=1)
    webhook_backoff_initial_seconds: float = Field(0.5, gt=0)
    webhook_backoff_max_seconds: float = Field(30.0, gt=0)
    webhook_queue_size: int = Field(10_000, ge=1)
    anomaly_max_readings: int = Field(10_000, ge=1, le=100_000)
    """Readings of one device examined per anomaly query at most (the newest of the window)."""


class RatePolicy(Section):
    """A token bucket: ``burst`` at once, then ``per_second`` on average."""

    per_second: float = Field(gt=0, allow_inf_nan=False)
    burst: int = Field(ge=1)


class RateLimitSettings(Section):
    """Budgets kept in each process's memory (several processes: each its own)."""

    login_per_username: RatePolicy = RatePolicy(per_second=0.1, burst=5)
    """Failed logins (POST /api/auth/token) per username; over it: 429 with Retry-After."""
    login_per_client: RatePolicy = RatePolicy(per_second=0.5, burst=20)
    """Failed logins per client address (behind a proxy, the proxy's address)."""
    credential_failures_per_client: RatePolicy = RatePolicy(per_second=1.0, burst=50)
    """Bearer credentials (API keys, tokens) refused per client address; over it: 429."""
    device_readings: RatePolicy = RatePolicy(per_second=1000.0, burst=20_000)
    """Readings one device may send, on every protocol together; over it a reading is
    rejected ``throttled`` (HTTP 429) and counted in iot_readings_throttled."""

    @model_validator(mode="before")
    @classmethod
    def _partial_policies(cls, data: Any) -> Any:
        """A policy given in part (``IOT_RATE_LIMITS__DEVICE_READINGS__BURST=...``) keeps its
        other default."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, given in data.items():
            field = cls.model_fields.get(name)
            if isinstance(given, dict) and field is not None and isinstance(field.default, RatePolicy):
                merged[name] = {**field.default.model_dump(), **given}
        return merged


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IOT_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    api: ApiSettings = ApiSettings()
    eventstore: EventStoreSettings = EventStoreSettings()
    mqtt: MqttSettings = MqttSettings()
    coap: CoapSettings = CoapSettings()
    lorawan: LorawanSettings = LorawanSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    timeseries: TimeseriesSettings = TimeseriesSettings()
    commands: CommandSettings = CommandSettings()
    streaming: StreamingSettings = StreamingSettings()
    security: SecuritySettings = SecuritySettings()
    analytics: AnalyticsSettings = AnalyticsSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()

    @model_validator(mode="after")
    def _anonymous_devices_only_on_loopback(self) -> Settings:
        if self.security.allow_anonymous_devices == "loopback":
            for key, host in anonymous_device_listeners(self):
                if not is_loopback(host):
                    raise ValueError(
                        f"security.allow_anonymous_devices: loopback admits devices without credentials, but "
                        f"{key} listens on {host}: set security.allow_anonymous_devices: never (devices then "
                        f"present a token, an API key or a certificate), or bind {key} to 127.0.0.1")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init_settings carries the YAML file (see load_settings), so it ranks below both
        # kinds of environment variable.
        return env_settings, _ConventionalEnvSource(settings_cls), init_settings


def anonymous_device_listeners(settings: Settings) -> list[tuple[str, str]]:
    """(key, host) of every listener that would admit devices without credentials under
    ``security.allow_anonymous_devices: loopback``."""
    listeners = []
    mqtt = settings.mqtt
    if mqtt.enabled and mqtt.embedded_broker and not settings.security.mutual_tls_required:
        listeners.append(("mqtt.broker_url", mqtt.host))
    coap = settings.coap
    if coap.enabled and coap.allow_unauthenticated:
        listeners.append(("coap.host", coap.host))
    return listeners


class _ConventionalEnvSource(PydanticBaseSettingsSource):
    """The variable names operators already use for these services."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None = None):
        super().__init__(settings_cls)
        self._environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, dict[str, Any]] = {}
        for name, (section, key) in CONVENTIONAL_ENV.items():
            if name in self._environ:
                values.setdefault(section, {})[key] = self._environ[name]
        return values


class ConfigError(Exception):
    """A bad setting; ``str()`` is the one line printed before start-up stops."""


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def default_config_path() -> Path | None:
    explicit = os.environ.get("IOT_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("config.yaml")
    return local if local.exists() else None


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Reads ``path`` (or $IOT_CONFIG, or ./config.yaml) and the environment.

    ``overrides`` (nested dicts by section) rank above the file but below the environment; the
    CLI uses them for flags such as ``--port``.
    """
    path = path or default_config_path()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path}: {exc}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: must be a mapping of sections")
        data = loaded
    data = _deep_merge(data, overrides)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from None
    except SettingsError as exc:  # an environment value that is not the JSON a list or map needs
        raise ConfigError(f"bad config value: {exc}".splitlines()[0]) from None
    return settings


# A rejected secret is named, never echoed.
_SECRET_WORDS = ("token", "passphrase", "password", "key", "secret")


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if not key:  # a rule across sections: its message names the keys
        return f"bad config value {message.removeprefix('Value error, ')}"
    if first["type"] == "extra_forbidden":
        message = "is not a known setting"
    elif (
        "input" in first
        and not isinstance(first["input"], dict)
        and not any(word in key for word in _SECRET_WORDS)
    ):
        message = f"{message} (got {first['input']!r})"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"bad config value {key}: {message}{more}"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``; any other name or address (0.0.0.0, ::) is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def anonymous_coap(settings: Settings) -> bool:
    """Whether CoAP requests with neither OSCORE nor a token are served: only with
    ``coap.allow_unauthenticated``, ``security.allow_anonymous_devices: loopback`` and the CoAP
    listener on a loopback address."""
    coap = settings.coap
    return (coap.allow_unauthenticated and settings.security.allow_anonymous_devices == "loopback"
            and is_loopback(coap.host))

