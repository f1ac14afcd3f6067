"""nginx in a temporary prefix: the fixed-JSON upstream, and the reverse-proxy peer (proxy_buffering off).

Both run with `master_process off`, so the process we start is the one that serves (its pid is the
one whose CPU time and memory we read), and `daemon off`, so it stays our child.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .procs import Process

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What OpenAI answers to POST /v1/chatkit/sessions (the shape in chatkit-protocol.md), 700-odd bytes.
SESSION_JSON = json.dumps({
    "id": "cksess_bench0000000000000000", "object": "chatkit.session",
    "client_secret": "ek_bench_" + "x" * 48, "expires_at": 1767225600, "status": "active",
    "user": "bench-user",
    "workflow": {"id": "wf_bench", "version": None, "state_variables": None, "tracing": {"enabled": True}},
    "rate_limits": {"max_requests_per_1_minute": 10}, "max_requests_per_1_minute": 10,
    "chatkit_configuration": {
        "automatic_thread_titling": {"enabled": True},
        "file_upload": {"enabled": False, "max_file_size": 512, "max_files": 10},
        "history": {"enabled": True, "recent_threads": None},
    },
}, separators=(",", ":"))

COMMON = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{body}
}}
"""

FIXED_JSON = """\
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{json}';
        }}
    }}
"""

PROXY = """\
    upstream json_upstream {{ server 127.0.0.1:{json_port}; keepalive 512; }}
    upstream sse_upstream {{ server 127.0.0.1:{sse_port}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 300s;
        location /api/chatkit/stream {{ proxy_pass http://sse_upstream/v1/chatkit/stream; }}
        location /api/chatkit/ {{ proxy_pass http://json_upstream/v1/chatkit/; }}
    }}
"""


def _start(name: str, prefix: Path, body: str, *, cpu: int) -> Process:
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(COMMON.format(prefix=prefix, body=body))
    return Process(name, [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                   cpu=cpu, log=prefix / "stdout.log")


def start_fixed_json(prefix: Path, port: int, *, cpu: int) -> Process:
    """nginx answering every request with the session JSON: the throughput upstream."""
    return _start("nginx-json", prefix, FIXED_JSON.format(port=port, json=SESSION_JSON), cpu=cpu)


def start_proxy(prefix: Path, port: int, json_port: int, sse_port: int, *, cpu: int) -> Process:
    """nginx as the reverse-proxy peer: /api/chatkit/stream to the SSE upstream, the rest to the JSON one."""
    return _start("nginx-proxy", prefix, PROXY.format(port=port, json_port=json_port, sse_port=sse_port), cpu=cpu)
