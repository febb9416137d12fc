"""Alert rules and the alerts they raise."""

from iot_platform.domain.alerts.alert import OPEN_STATUSES, Alert, AlertStatus
from iot_platform.domain.alerts.evaluation import (
    SeriesState,
    Verdict,
    evaluate,
    holds,
    judge,
    silent_for,
)
from iot_platform.domain.alerts.events import (
    ALERT_EVENTS,
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    AlertRuleChanged,
    AlertRuleCreated,
    AlertRuleDeleted,
)
from iot_platform.domain.alerts.rule import AlertRule
from iot_platform.domain.alerts.values import (
    Channel,
    Condition,
    DeviceSelector,
    Operator,
    RuleDefinition,
    Severity,
)

__all__ = [
    "ALERT_EVENTS",
    "OPEN_STATUSES",
    "Alert",
    "AlertAcknowledged",
    "AlertRaised",
    "AlertResolved",
    "AlertRule",
    "AlertRuleChanged",
    "AlertRuleCreated",
    "AlertRuleDeleted",
    "AlertStatus",
    "Channel",
    "Condition",
    "DeviceSelector",
    "Operator",
    "RuleDefinition",
    "Severity",
    "SeriesState",
    "Verdict",
    "holds",
    "evaluate",
    "judge",
    "silent_for",
]
