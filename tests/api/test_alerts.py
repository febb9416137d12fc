"""Alert rules over REST, in process on both event stores: their routes, ETags, and the 422s that
name the field. Rules judging real readings are in tests/e2e/test_alerts.py."""

from __future__ import annotations

import httpx

from tests.e2e.test_alerts import rule


def test_rule_routes_and_bad_rules_get_422_naming_the_field(api: httpx.Client) -> None:
    minimal = rule(api, device_id="deviceA", metric="temp", op=">", threshold=32)
    assert (minimal["device_pattern"], minimal["severity"], minimal["enabled"]) == ("deviceA", "warning", True)
    for body, field in (
        ({"metric": "t", "op": ">"}, "threshold"),
        ({"metric": "t", "op": "between", "threshold": 1}, "op"),
        ({"metric": "t", "op": "outside", "min": 5, "max": 1}, "min"),
        ({"metric": "t", "op": "zscore", "threshold": 3, "window": 2}, "window"),
        ({"metric": "t", "op": ">", "threshold": 1, "notification_channels": ["webhook"]}, "webhook_url"),
        ({"metric": "t", "op": ">", "threshold": 1, "severity": "loud"}, "severity"),
        ({"op": ">", "threshold": 1}, "metric"),
        ({"metric": "t", "op": ">", "threshold": 1, "colour": "red"}, "colour"),
    ):
        response = api.post("/analytics/rules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["details"][0]["field"] == field, (body, response.text)
    url = f"/analytics/rules/{minimal['id']}"
    etag = api.get(url).headers["ETag"]
    changed = api.patch(url, json={"threshold": 35, "enabled": False}, headers={"If-Match": etag})
    assert changed.status_code == 200 and changed.json()["threshold"] == 35.0
    assert api.patch(url, json={"threshold": 36}, headers={"If-Match": etag}).status_code == 409
    assert api.patch(url, json={"op": "inside"}).json()["error"]["details"][0]["field"] == "min"
    assert [r["id"] for r in api.get("/analytics/rules", params={"enabled": False}).json()["items"]] == [minimal["id"]]
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
