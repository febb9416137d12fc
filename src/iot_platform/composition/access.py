"""Access: API keys, users, bearer tokens and the budgets of failed attempts."""

from __future__ import annotations

from dataclasses import dataclass

from iot_platform.application.access.service import AccessLimits, AccessService
from iot_platform.composition.adapters import Adapters
from iot_platform.config import RatePolicy, Settings
from iot_platform.infrastructure.access.passwords import ScryptPasswords
from iot_platform.infrastructure.access.store import SqlApiKeys, SqlUsers
from iot_platform.infrastructure.access.tokens import JwtSigner
from iot_platform.infrastructure.rate_limits import TokenBuckets


@dataclass
class Access:
    service: AccessService
    keys: SqlApiKeys


def access_from(settings: Settings, adapters: Adapters) -> Access:
    keys, box = SqlApiKeys(adapters.engine), adapters.secrets
    service = AccessService(keys, SqlUsers(adapters.engine),
                            JwtSigner(lambda: box.derive(b"iot-platform bearer tokens")),
                            adapters.clock, settings.security.token_ttl_seconds,
                            passwords=ScryptPasswords(), limits=access_limits(settings))
    return Access(service, keys)


def buckets(policy: RatePolicy) -> TokenBuckets:
    return TokenBuckets(policy.per_second, policy.burst)


def access_limits(settings: Settings) -> AccessLimits:
    limits = settings.rate_limits
    return AccessLimits(login_per_username=buckets(limits.login_per_username),
                        login_per_client=buckets(limits.login_per_client),
                        credential_failures_per_client=buckets(limits.credential_failures_per_client))
