import os
import socket

from celery import shared_task


@shared_task(name="runtime.health_probe", ignore_result=False)
def health_probe() -> str:
    """Answered by whichever worker picks it up: proves a worker is consuming the queue."""
    return f"{socket.gethostname()} pid {os.getpid()}"
