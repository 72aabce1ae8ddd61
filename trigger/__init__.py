"""trigger: turns OSS, Kafka, cron and webhook events into Argo Workflows."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trigger")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
