"""The Celery tasks' names (`tasks.py` registers them): code that queues one sends it by name, so it need not
import the tasks module, which imports it back."""

RUN_PREDICTION = "inference.run_prediction"
DELIVER_WEBHOOK = "inference.deliver_webhook"
