"""Gunicorn settings for the portal behind a TLS-terminating proxy (see docs/deploy.md)."""

import multiprocessing
import os

bind = os.environ.get("REAUTH_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("REAUTH_WEB_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = 2
timeout = 30
graceful_timeout = 30
# The request line of a link holds its token and a callback holds code and state. Log the
# path without the query string, and no Referer; the portal's log filter also masks
# /r/<token> and escapes control characters in the (percent-decoded) path and the user agent,
# so one request is one line.
accesslog = "-"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(L)ss "%(a)s"'
errorlog = "-"
forwarded_allow_ips = os.environ.get("REAUTH_FORWARDED_ALLOW_IPS", "127.0.0.1")
# Recent gunicorn releases open a control socket in $XDG_RUNTIME_DIR or ~/.gunicorn, shared by every
# instance of the same user and not writable under systemd's ProtectSystem=strict. The portal
# needs none of its commands (reload with SIGHUP, stop with SIGTERM).
control_socket_disable = True
