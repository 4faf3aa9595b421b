"""Real redis-servers (Debian's package) on free loopback ports, in temporary directories: a single Redis, or a
Redis Cluster made by `redis-cli --cluster create`; either with TLS and an ACL user. A node can be killed and
started again on the same port, to test what the gateway does while Redis (or part of it) is away."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.servers import free_port

USER, PASSWORD = "chatsse", "s3cret-acl-pw"


@dataclass(frozen=True)
class Tls:
    """A private CA and a certificate for 127.0.0.1 it signed (made with openssl)."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path) -> Tls:
        directory.mkdir(parents=True, exist_ok=True)
        ca, ca_key = directory / "ca.crt", directory / "ca.key"
        cert, key, request = directory / "server.crt", directory / "server.key", directory / "server.csr"
        run = ["openssl"]
        subprocess.run([*run, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
                        "-keyout", str(ca_key), "-out", str(ca)], check=True, capture_output=True)  # fmt: skip
        subprocess.run([*run, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-keyout", str(key), "-out", str(request)], check=True, capture_output=True)  # fmt: skip
        extensions = directory / "san.ext"
        extensions.write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
        subprocess.run([*run, "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)],
                       check=True, capture_output=True)  # fmt: skip
        return cls(ca, cert, key)


def _server_args(port: int, tls: Tls | None, acl: bool) -> list[str]:
    args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if tls is None:
        args += ["--port", str(port)]
    else:
        args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file",
                 str(tls.key), "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]  # fmt: skip
    if acl:
        args += ["--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", "--user", "default", "off"]
    return args


def _client(port: int, tls: Tls | None, acl: bool) -> redis.Redis:
    options: dict[str, object] = {"port": port, "socket_connect_timeout": 0.5, "socket_timeout": 2}
    if tls is not None:
        options |= {"ssl": True, "ssl_ca_certs": str(tls.ca)}
    if acl:
        options |= {"username": USER, "password": PASSWORD}
    return redis.Redis(**options)  # type: ignore[arg-type]


def _wait_for(client: redis.Redis, what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.ResponseError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.02)


def _url(port: int, tls: Tls | None, acl: bool) -> str:
    credentials = f"{USER}:{PASSWORD}@" if acl else ""
    return f"{'rediss' if tls else 'redis'}://{credentials}127.0.0.1:{port}/0"


class RedisServer:
    def __init__(self, directory: Path, tls: Tls | None = None, acl: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.tls, self.acl = tls, acl
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return _url(self.port, self.tls, self.acl)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server; .ci/run does it)"
        command = [binary, *_server_args(self.port, self.tls, self.acl), "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = _client(self.port, self.tls, self.acl)
        _wait_for(client, "redis-server")
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def cluster_port() -> int:
    """A free port P below 55535 whose cluster bus port, P + 10000, is free too (a node above it cannot start)."""
    for _ in range(200):
        port = random.randrange(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterNodes:
    """`primaries` primaries with `replicas` replicas each, a `node_timeout` in ms, each node in a folder of its own."""

    def __init__(
        self,
        directory: Path,
        primaries: int = 3,
        replicas: int = 0,
        node_timeout: int = 1000,
        tls: Tls | None = None,
        acl: bool = False,
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        self.node_timeout = node_timeout
        self.tls, self.acl = tls, acl
        self.ports = [cluster_port() for _ in range(primaries * (1 + replicas))]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        return _url(self.ports[0], self.tls, self.acl)

    def client(self, port: int) -> redis.Redis:
        return _client(port, self.tls, self.acl)

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        command = ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        if self.tls is not None:
            command += ["--tls", "--cacert", str(self.tls.ca)]
        if self.acl:
            command += ["--user", USER, "--pass", PASSWORD]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        self.wait_until_ok()
        deadline = time.monotonic() + 30
        while self.replicas and not self._replicas_synced():  # a replica that never synced cannot take over
            if time.monotonic() > deadline:
                raise RuntimeError("the replicas did not sync")
            time.sleep(0.05)

    def _replicas_synced(self) -> bool:
        links = []
        for port in self.processes:
            client = self.client(port)
            try:
                replication = client.info("replication")
            finally:
                client.close()
            if replication.get("role") == "slave":
                links.append(replication.get("master_link_status") == "up")
        return len(links) == len(self.ports) - len(self.ports) // (1 + self.replicas) and all(links)

    def start_node(self, port: int) -> None:
        folder = self.directory / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        args = _server_args(port, self.tls, self.acl) + ["--cluster-enabled", "yes", "--cluster-config-file",
                "nodes.conf", "--cluster-node-timeout", str(self.node_timeout), "--dir", str(folder),
                "--logfile", str(folder / "redis.log"), "--repl-diskless-sync-delay", "0"]  # fmt: skip
        if self.tls is not None:
            args += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        if self.acl:
            args += ["--masteruser", USER, "--masterauth", PASSWORD]
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server; .ci/run does it)"
        self.processes[port] = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(port)
        _wait_for(client, f"cluster node {port}")
        client.close()

    def kill(self, port: int) -> None:
        process = self.processes.pop(port, None)
        if process is not None:
            process.kill()
            process.wait(10)

    def kill_all(self) -> None:
        for port in list(self.processes):
            self.kill(port)

    def info(self, port: int) -> dict[str, str]:
        client = self.client(port)
        try:
            text = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        finally:
            client.close()
        raw = text.decode() if isinstance(text, bytes) else str(text)
        return dict(line.split(":", 1) for line in raw.split() if ":" in line)

    def whole(self) -> bool:
        """Every slot served by a running primary, and every running node says so (after a failover, too)."""
        return self.state_is("ok") and all(port in self.processes for port in self._slot_owners())

    def _slot_owners(self) -> set[int]:
        client = self.client(next(iter(self.processes)))
        try:
            return {int(primary[1]) for _, _, primary, *_ in client.execute_command("CLUSTER", "SLOTS")}  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def state_is(self, state: str) -> bool:
        """Whether every running node says the cluster is `state` (ok or fail) and knows every running node."""
        try:
            infos = [self.info(port) for port in self.processes]
        except redis.RedisError:
            return False
        return all(i.get("cluster_state") == state for i in infos)

    def wait_until_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.whole():
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not become ok")
            time.sleep(0.05)

    def primaries(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        found = []
        for port in self.processes:
            client = self.client(port)
            try:
                if client.info("replication").get("role") == "master":
                    found.append(port)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return found

    def primary_of(self, key: str) -> int:
        """The port of the primary serving `key`'s slot now."""
        client = self.client(next(iter(self.processes)))
        try:
            slot = client.execute_command("CLUSTER", "KEYSLOT", key)  # type: ignore[no-untyped-call]
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):  # type: ignore[no-untyped-call]
                if start <= slot <= end:
                    return int(primary[1])
        finally:
            client.close()
        raise RuntimeError(f"no node serves {key}")
