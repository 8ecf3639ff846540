"""The catalog's Celery tasks' names (`tasks.py` registers them): code that queues one sends it by name, so it
need not import the tasks module, which imports it back."""

VALIDATE_VERSION = "marketplace.validate_version"
OPTIMIZE_VERSION = "marketplace.optimize_version"
