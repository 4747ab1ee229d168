"""gunicorn settings for the gateway (``make serve`` adds the bind address, pid and log paths on the command line).

    gunicorn --config gateway/gunicorn.conf.py --bind 127.0.0.1:7777 'gateway:create_app()'

Workers and threads: the gateway mostly waits (on TorchServe, on fsync), so two processes (one per core) with
four threads each keep both cores busy without a thread per request; a SIGKILLed worker is replaced by the master.
Chosen by load (``python -m benchmarks.load --seconds 40 --workers W --threads T``, 16 clients, 2 cores, one
command, BENCHMARKS.md): 2x4 101 and 119 req/s (run first and last), 1x8 90, 4x2 100, 2x8 96, no failure in any.
Uploads and predictions take at most a few seconds; ``timeout`` kills a worker stuck for two minutes, and
``graceful_timeout`` lets requests in flight finish on a restart (SIGHUP) or stop (SIGTERM).
"""
import os
import threading
import time

from serving.logs import keep_logs
from tagger.layout import DataDir

workers = 2
threads = 4
timeout = 120
graceful_timeout = 20
keepalive = 5
# Access log with the request id the gateway echoes in X-Request-ID (the client's, or one it made).
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
# A worker is replaced after this many requests (and a random few more), bounding any slow memory growth.
max_requests = 5000
max_requests_jitter = 500


def when_ready(server):
    """The master keeps the stack's logs small (serving/logs.py): every TAGGER_LOG_CHECK_S seconds (default 60) it
    rotates those under the data folder's run/ that passed TAGGER_LOG_MAX_BYTES."""
    run_dir = DataDir(os.environ.get("TAGGER_DATA_DIR", "var")).run
    period = float(os.environ.get("TAGGER_LOG_CHECK_S", 60))

    def loop():
        while True:
            time.sleep(period)
            try:
                keep_logs(run_dir)
            except Exception as exc:  # noqa: BLE001 - a log that cannot be rotated must not stop the gateway
                server.log.warning("rotating logs under %s failed: %s", run_dir, exc)

    threading.Thread(target=loop, daemon=True, name="log-keeper").start()
