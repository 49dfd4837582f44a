"""Suite-wide fixtures: the sandbox gateway plugin that hsq_refunds ships for merchants' tests."""

pytest_plugins = ["hsq_refunds.sandbox.pytest_plugin"]
