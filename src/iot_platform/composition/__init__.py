"""The composition root: the only package that knows every adapter.

- ``adapters``: the adapters built from settings (``Adapters``, ``adapters_from``); tests give
  ``build_platform`` their own.
- one module per area, each a function from settings and adapters to that area's use cases:
  ``devices``, ``telemetry`` (with the device-facing MQTT and CoAP servers), ``alerts``,
  ``commands``, ``access``, ``pki``, ``lorawan``; ``projections`` (the read models and the
  outbox) and ``broker`` (the embedded broker's admission and the platform's own login) serve
  several of them.
- ``runtime``: start and stop order, periodic jobs, stream consumers, first-run setup; tasks
  are kept by their ``Job``.
- ``platform``: ``Platform`` and ``build_platform(settings, adapters=None)``.
- ``services``: ``services_from(platform)``, the use cases and ports presentation is given.

A new capability gets its own area module here, named for it, wired into ``build_platform``:
firmware (images and OTA updates) in ``firmware``, rollout campaigns in ``campaigns``, edge
gateways in ``edge``; its background work joins ``runtime.Job`` and the start and stop order
there. Only the REST app factory and the CLI import this package.
"""

from iot_platform.composition.adapters import Adapters, adapters_from
from iot_platform.composition.platform import Platform, build_platform
from iot_platform.composition.services import services_from

__all__ = ["Adapters", "Platform", "adapters_from", "build_platform", "services_from"]
