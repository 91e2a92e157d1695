"""Real servers for tests, on free ports of 127.0.0.1: moto's S3, PostgreSQL, MLflow.

Each is started with `subprocess.Popen(start_new_session=True)` and stopped by its own process
group id (a polite signal, then SIGKILL), never by name.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def venv_tool(name: str) -> str:
    """A console script of this interpreter's environment (moto_server, mlflow), else PATH's."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else (shutil.which(name) or name)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop `proc`'s process group (its own session): `sig`, then SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def wait_for_port(proc: subprocess.Popen, port: int, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {proc.returncode} before listening"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on 127.0.0.1:{port} in {timeout}s"
                ) from None
            time.sleep(0.2)


@contextmanager
def serve(
    cmd: list[str],
    port: int,
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    timeout: float = 60,
    **popen: object,
) -> Iterator[subprocess.Popen]:
    """Run `cmd` until the block ends; yields once it listens on `port`. Its output goes to
    `log` (shown in the error when it does not come up)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=None if env is None else dict(env),
        start_new_session=True,
        **popen,
    )
    try:
        try:
            wait_for_port(proc, port, what, timeout)
        except RuntimeError as e:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"{e}\n{tail}") from None
        yield proc
    finally:
        stop(proc, stop_signal)
        if log:
            out.close()


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3 server; yields its endpoint URL."""
    port = free_port()
    with serve([venv_tool("moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, "moto"):
        yield f"http://127.0.0.1:{port}"


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server binaries: PATH's `initdb`, else Debian's
    /usr/lib/postgresql/<version>/bin (the packages `.ci/run` installs), newest first."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    debian = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(debian[-1]).parent if debian else None


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, db: str, driver: str | None = None) -> str:
        """A connection URL; `driver` picks SQLAlchemy's DBAPI (`postgresql+psycopg2://`: plain
        `postgresql://` means psycopg 3 to SQLAlchemy 2.1, which is not installed)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def connect(self, db: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=db
        )

    def create_databases(self, *names: str) -> None:
        conn = self.connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for name in names:
                    cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _unprivileged_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as `postgres` (Debian's package
    creates it) or `nobody`; as anyone else, as oneself (None)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(
        "running as root and there is no unprivileged account (postgres or nobody) to run "
        "PostgreSQL as; create one (useradd -r postgres)"
    )


@contextmanager
def postgres(
    bindir: Path, user: str = "vq", password: str = "vq-test-secret"
) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password authentication, scram-sha-256),
    in a temporary folder that it owns; removed afterwards."""
    account = _unprivileged_account()
    # Not under pytest's tmp_path: that is private to root, and the server may run as another
    # account; this folder is made for it alone.
    root = Path(tempfile.mkdtemp(prefix="vq-pg-"))
    as_account: dict[str, object] = {}
    if account is not None:
        os.chown(root, account.pw_uid, account.pw_gid)
        as_account = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    try:
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        data = root / "data"
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ],  # fmt: skip
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            **as_account,
        )
        if init.returncode:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stderr[-3000:]}")
        port = free_port()
        cmd = [
            str(bindir / "postgres"),
            "-D", str(data),
            "-p", str(port),
            "-k", str(root),  # the Unix socket stays in this folder
            "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
        with serve(
            cmd, port, "postgres", env=env, log=root / "postgres.log", stop_signal=signal.SIGINT,
            cwd=root, **as_account,
        ):  # fmt: skip
            yield Postgres("127.0.0.1", port, user, password)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts_destination: str, env: Mapping[str, str], log: Path
) -> Iterator[str]:
    """An MLflow tracking server on `backend_store_uri` that proxies artifacts to
    `artifacts_destination` (its S3 credentials and endpoint come from `env`); yields its URL."""
    port = free_port()
    cmd = [
        venv_tool("mlflow"), "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    with serve(cmd, port, "mlflow server", env=env, log=log, timeout=120):
        yield f"http://127.0.0.1:{port}"
