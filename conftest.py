"""The repository's root conftest: loads the test suites' plugin (markers, CI rules) for every test path, and
pytester (which tests/test_support_plugin.py uses to check that plugin)."""

pytest_plugins = ["tests.support.plugin", "pytester"]
