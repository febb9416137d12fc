"""Registering a LoRaWAN device: the Device aggregate records the public profile, the session
store keeps the keys (sealed). The keys go in first, so a device that is registered can always
be served; if the registration then fails, they are taken out again."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from iot_platform.application.clock import utcnow
from iot_platform.application.devices.commands import CommandResult, RegisterDevice
from iot_platform.application.devices.handlers import DeviceCommandHandler
from iot_platform.application.lorawan.ports import (
    Gateway,
    Gateways,
    LoRaWANDevices,
    LoRaWANSession,
    RootKeys,
    SessionTaken,
)
from iot_platform.domain.errors import AlreadyExists, InvalidValue
from iot_platform.domain.lorawan import Activation, validate_eui

_KEY_BYTES = 16


def _check_key(value: bytes | None, name: str) -> None:
    if value is None or len(value) != _KEY_BYTES:
        raise InvalidValue(f"lorawan.{name} must be {_KEY_BYTES} bytes (32 hex digits)",
                           field=f"lorawan.{name}")


class LoRaWANRegistrar:
    def __init__(
        self, devices: DeviceCommandHandler, sessions: LoRaWANDevices, gateways: Gateways,
        codecs: Collection[str],
    ) -> None:
        self._devices = devices
        self._sessions = sessions
        self._gateways = gateways
        self._codecs = codecs

    async def register(self, command: RegisterDevice, keys: RootKeys) -> CommandResult:
        profile = command.lorawan
        if profile is None:
            raise InvalidValue("a LoRaWAN device needs its lorawan block", field="lorawan")
        if profile.codec not in self._codecs:
            raise InvalidValue(f"unknown codec {profile.codec!r}; known: {sorted(self._codecs)}",
                               field="lorawan.codec")
        if profile.activation is Activation.ABP:
            _check_key(keys.nwk_s_key, "nwk_s_key")
            _check_key(keys.app_s_key, "app_s_key")
            keys = replace(keys, app_key=None)
        else:
            _check_key(keys.app_key, "app_key")
            keys = RootKeys(app_key=keys.app_key)
        session = LoRaWANSession(
            device_id=command.device_id, dev_eui=profile.dev_eui, activation=profile.activation,
            codec=profile.codec, join_eui=profile.join_eui, dev_addr=profile.dev_addr,
            root=keys, f_cnt_up=None, f_cnt_down=0,
        )
        try:
            await self._sessions.add(session)
        except SessionTaken as taken:
            raise AlreadyExists(str(taken), field=taken.field) from None
        try:
            return await self._devices.register(command)
        except BaseException:
            await self._sessions.remove(command.device_id)
            raise

    async def add_gateway(self, gateway_eui: str, name: str | None) -> Gateway:
        eui = validate_eui(gateway_eui, "gateway_eui")
        gateway = Gateway(gateway_eui=eui, name=(name or eui).strip() or eui, registered_at=utcnow())
        try:
            await self._gateways.add(gateway)
        except SessionTaken as taken:
            raise AlreadyExists(str(taken), field=taken.field) from None
        return gateway
