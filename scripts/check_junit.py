"""A second opinion on a pytest run's status, from its JUnit XML report (used by .ci/run).

``make test`` is red when pytest's exit status is not 0. This also fails the build when the report holds a failure
or an error, or no test at all, whatever the status said: one run under contention ended with status 0 and 6
failures (never reproduced since; an exit hook replacing the interpreter's status is the suspect), and a green CI
must mean that every test passed.

``make test`` runs the tests in pytest-xdist workers; the report is written by the main pytest process from every
worker's results, in the same format (one ``testsuite``). A test failing in a worker, a set-up error there and a
worker killed in the middle of a test (xdist reports that test as failed) are all counted.

Usage: python scripts/check_junit.py REPORT.xml
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main(path: str) -> int:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    bad = sum(int(suite.get("failures", 0)) + int(suite.get("errors", 0)) for suite in suites)
    ran = sum(int(suite.get("tests", 0)) for suite in suites)
    if bad or not ran:
        print(f"CI: {bad} of {ran} test(s) failed or errored ({path}), whatever pytest's exit status said")
        return 1
    print(f"CI: {ran} tests in {path}, none failed or errored")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
