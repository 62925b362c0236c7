"""The served process: a killed worker is replaced, a taken port refuses to start, slow clients are
cut off. Each test runs `python -m service serve` as an operator does and talks to it over TCP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from service.settings import PROJECT_ROOT
from tests.api import start_service


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def workers_of(process: subprocess.Popen[str]) -> list[int]:
    """granian's worker processes (its other child is multiprocessing's resource tracker)."""
    children = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
    return [pid for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]


def answers_again(base: str, attempts: int = 300) -> bool:
    for _ in range(attempts):
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def wait_for_lock_waiter(url: str) -> None:
    with psycopg.connect(url) as watcher:
        for _ in range(300):
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'freya-backend' "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise AssertionError("the write never waited on the lock")


def test_a_worker_killed_mid_write_is_respawned_and_its_write_never_lands(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    process, base = start_service(url)
    try:
        user = httpx.post(f"{base}/v1/users", json={"email": "kill@example.com", "name": "K"}, timeout=5).json()
        conversation = httpx.post(f"{base}/v1/conversations", json={"user_id": user["id"]}, timeout=5).json()
        path = f"{base}/v1/conversations/{conversation['id']}/messages"
        message, key = {"role": "user", "content": "exactly once"}, {"Idempotency-Key": "killed-worker"}
        locked, release = threading.Event(), threading.Event()
        holder = threading.Thread(target=hold_lock_on_conversation, args=(url, conversation["id"], locked, release))
        holder.start()
        locked.wait(30)
        outcome: list[object] = []

        def doomed() -> None:
            try:
                outcome.append(httpx.post(path, json=message, headers=key, timeout=30))
            except httpx.TransportError as error:
                outcome.append(error)

        request = threading.Thread(target=doomed)
        request.start()
        wait_for_lock_waiter(url)
        [worker] = workers_of(process)
        os.kill(worker, signal.SIGKILL)
        request.join(30)
        release.set()
        holder.join(30)
        assert isinstance(outcome[0], httpx.TransportError), outcome
        assert answers_again(base), "no worker came back"
        assert workers_of(process) != [worker]
        retried = httpx.post(path, json=message, headers=key, timeout=30)
        assert retried.status_code == 201, retried.text
        assert "idempotent-replayed" not in retried.headers
    finally:
        output = stop(process)
    assert "Respawning worker-1" in output
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def hold_lock_on_conversation(
    url: str, conversation_id: int, locked: threading.Event, release: threading.Event
) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT 1 FROM conversations WHERE id = %s FOR UPDATE", (conversation_id,))
        locked.set()
        release.wait(30)
        conn.rollback()


def raw_request(base: str, head: bytes, body: bytes, pause: float = 0.0) -> bytes:
    """Send ``head`` and then ``body`` as is (a byte at a time with ``pause`` between, when
    given) until the server stops reading; its answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        try:
            for part in [bytes([byte]) for byte in body] if pause else [body]:
                sock.sendall(part)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the body was all sent
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


HEAD = b"POST /v1/users HTTP/1.1\r\nHost: freya\r\nContent-Type: application/json\r\n"


def test_slow_and_broken_bodies_taken_port_and_forged_log_lines(fresh_database: Callable[[], str]) -> None:
    process, base = start_service(fresh_database(), FREYA_REQUEST_READ_TIMEOUT="1")
    try:
        short = raw_request(base, HEAD + b"Content-Length: 100\r\n\r\n", b'{"email"')
        unfinished = raw_request(base, HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b'5\r\n{"ema\r\n')
        trickled = raw_request(
            base, HEAD + b"Content-Length: 42\r\n\r\n", b'{"email": "slow@example.com", "name": "S"}', 0.2
        )
        malformed = raw_request(base, HEAD + b"Transfer-Encoding: chunked\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n")
        forged = httpx.get(f"{base}/v1/users/1%0Aforged-line", timeout=5)
        second = subprocess.run(
            [sys.executable, "-m", "service", "serve"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "FREYA_DATABASE_URL": fresh_database(), "FREYA_PORT": base.rsplit(":", 1)[1]},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        still = httpx.get(f"{base}/health/live", timeout=5)
    finally:
        output = stop(process)
    for answer in (short, unfinished, trickled):
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"application/problem+json" in answer
    assert malformed.startswith(b"HTTP/1.1 400"), malformed
    assert b"application/problem+json" in malformed
    assert forged.status_code == 400
    assert second.returncode != 0
    assert "cannot serve on" in second.stderr, second.stderr + second.stdout
    assert still.status_code == 200
    assert "/v1/users/1\\nforged-line 400" in output
    assert not [line for line in output.splitlines() if line.startswith("forged-line")]


def test_head_and_raw_utf8_queries_over_http(fresh_database: Callable[[], str]) -> None:
    """A HEAD answer over TCP carries GET's Content-Length but no body: the next request on the
    same keep-alive connection must still read its own answer, not the withheld bytes. A query
    sent with its UTF-8 unescaped (as some clients do) means what it spells, not its Latin-1."""
    process, base = start_service(fresh_database(), FREYA_LOG_LEVEL="INFO")
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            user = http.post("/v1/users", json={"email": "head@example.com", "name": "H"}).json()
            head = http.head(f"/v1/users/{user['id']}")
            got = http.get(f"/v1/users/{user['id']}")
            missing = http.head("/v1/users/999999")
            again = http.get("/health/live")
            conversation = http.post("/v1/conversations", json={"user_id": user["id"]}).json()
            http.post(f"/v1/conversations/{conversation['id']}/messages", json={"role": "user", "content": "un café"})
        found = raw_request(
            base, "GET /v1/search/messages?q=café HTTP/1.1\r\nHost: freya\r\nConnection: close\r\n\r\n".encode(), b""
        )
    finally:
        output = stop(process)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert got.json() == user
    assert missing.status_code == 404
    assert missing.content == b""
    assert again.status_code == 200
    assert f"HEAD /v1/users/{user['id']} 200" in output
    assert found.startswith(b"HTTP/1.1 200"), found
    assert "un café".encode() in found
