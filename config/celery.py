import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from config.logging import add_request_id_header, bind_task_context, clear_task_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The request id of the request that enqueued a task is on every line the task logs.
before_task_publish.connect(add_request_id_header, weak=False)
task_prerun.connect(bind_task_context, weak=False)
task_postrun.connect(clear_task_context, weak=False)
