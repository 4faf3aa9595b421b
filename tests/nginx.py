"""A real nginx (Debian's nginx-light) in front of several gateways, round robin with no sticky routing, configured
as the README says a stream needs: HTTP/1.1 upstream connections, no buffering, long read timeouts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.servers import free_port

# The README's configuration, with this test's paths and ports filled in.
CONF = """
worker_processes 1;
{user}
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream chatsse {{
{servers}
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://chatsse;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
      proxy_connect_timeout 2s;
    }}
  }}
}}
"""


class Nginx:
    def __init__(self, directory: Path, backends: list[int]) -> None:
        self.directory = directory
        self.backends = backends
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert os.path.exists(binary), "nginx is not installed (apt-get install nginx-light; .ci/run does it)"
        self.directory.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=10s;" for port in self.backends)
        user = "user root;" if os.geteuid() == 0 else ""  # workers must write the temporary folders made here
        conf = self.directory / "nginx.conf"
        conf.write_text(CONF.format(dir=self.directory, servers=servers, port=self.port, user=user))
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.directory), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "error.log").read_text() if (self.directory / "error.log").exists() else ""
                    raise RuntimeError(f"nginx did not start: {log[-500:]}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
