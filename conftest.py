"""The repository's root conftest: loads the test suites' plugin (markers, CI rules) for every test path."""

pytest_plugins = ["tests.support.plugin"]
