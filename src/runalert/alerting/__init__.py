"""Alert delivery: the :class:`Alerter`, its per-channel workers, rate limits and the spool."""

from runalert.alerting.alerter import Alerter
from runalert.alerting.ratelimit import Suppressor, TokenBucket
from runalert.alerting.spool import Spool, SpoolBusy, SpooledAlert
from runalert.alerting.stats import AlerterStats
from runalert.alerting.worker import RetryPolicy

__all__ = ["Alerter", "AlerterStats", "RetryPolicy", "Spool", "SpoolBusy", "SpooledAlert", "Suppressor", "TokenBucket"]
