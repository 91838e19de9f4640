"""Real SIGTERM and SIGINT to real transformers and Keras fits (``integrations/signals.py``), the frameworks with
no exception hook: runalert's chained handlers report, flush (bounded), then hand over, so the process ends as it
does without runalert. Lightning's own cases (its ``SIGTERMException``) are in ``test_lightning.py``."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras

from integrations.conftest import Receiver
from integrations.signals import SIGINT, SIGTERM, signal_pair

FRAMEWORKS = ["transformers", "keras"]
# Two framework processes side by side a test, each waited for while it works (a hang: signals.STALL); at load
# 15 on two cores under scripts/stutter.py a test took over 200 s, near the suite's 300 s.
pytestmark = pytest.mark.timeout(900)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_real_sigterm_during_fit_is_one_preemption_alert_and_the_process_still_dies_of_it(
    framework: str, receiver: Receiver
) -> None:
    # The default action follows runalert's report: the process dies of SIGTERM as it does without runalert.
    without, ended = signal_pair(framework, SIGTERM, receiver)
    assert ended.returncode == without.returncode == -SIGTERM, ended.stderr[-3000:]
    (alert,) = ended.alerts  # delivered before the process ended, and nothing else
    assert alert["title"] == "Run preempted (SIGTERM)" and alert["level"] == "ERROR"
    assert ended.last_done == 2  # SIGTERM came during step 3: the step being computed, in text and field
    assert alert["fields"]["step"] == "3" and "at step 3, epoch 1" in alert["text"]
    assert alert["fields"]["epoch"] == "1"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_real_sigint_during_fit_is_one_interruption_warning(framework: str, receiver: Receiver) -> None:
    without, ended = signal_pair(framework, SIGINT, receiver)
    assert ended.returncode == without.returncode == -SIGINT  # an uncaught KeyboardInterrupt
    assert "KeyboardInterrupt" in ended.stderr  # the traceback still prints
    (alert,) = ended.alerts
    assert alert["title"] == "Run interrupted" and alert["level"] == "WARN"
    assert alert["fields"]["step"] == "3" and "at step 3, epoch 1" in alert["text"]
