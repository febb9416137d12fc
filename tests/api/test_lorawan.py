"""LoRaWAN registrations over REST, in process on both event stores: the 422s that name the
field, and a DevEUI taken twice. Radio traffic (GWMP over UDP) is in tests/e2e/test_lorawan.py."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_device_api import assert_unprocessable
from tests.e2e.test_lorawan import APP, APP_KEY, NWK, abp


def test_bad_lorawan_registrations_name_the_field(api: httpx.Client) -> None:
    def register(**lorawan: Any) -> httpx.Response:
        return api.post("/devices", json={"device_id": "lw-x", "device_type": "t", "protocol": "lorawan",
                                          "lorawan": {"dev_eui": "0000000000000001", **lorawan}})

    assert_unprocessable(register(activation="abp", dev_addr="01020304", app_s_key=APP), "lorawan.nwk_s_key")
    assert_unprocessable(register(activation="abp", app_s_key=APP, nwk_s_key=NWK), "lorawan.dev_addr")
    assert_unprocessable(register(activation="otaa", join_eui="0000000000000002"), "lorawan.app_key")
    assert_unprocessable(register(activation="otaa", app_key=APP_KEY, join_eui="0000000000000002",
                                  codec="nope"), "lorawan.codec")
    assert_unprocessable(register(activation="abp", dev_addr="0102", app_s_key=APP, nwk_s_key=NWK),
                         "lorawan.dev_addr")
    assert api.get("/devices/lw-x").status_code == 404
    abp(api, "lw-1", 1)
    taken = api.post("/devices", json={"device_id": "lw-2", "device_type": "t", "protocol": "lorawan",
                                       "lorawan": {"dev_eui": f"{1:016x}", "activation": "otaa",
                                                   "join_eui": "0000000000000002", "app_key": APP_KEY}})
    assert taken.status_code == 409, taken.text
    assert api.get("/devices/lw-2").status_code == 404
    assert api.post("/lorawan/gateways", json={"gateway_eui": "xyz"}).status_code == 422
