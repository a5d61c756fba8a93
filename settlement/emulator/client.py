"""Driving an emulator from another process: start it, reset it, inject faults.

Standard library only, so test fixtures and demo scripts can use it without aiohttp.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: The project root, where ``python -m settlement.emulator`` finds the package.
PROJECT_ROOT = Path(__file__).resolve().parents[2]

READY_PATTERN = re.compile(r"^stripe emulator on (http://127\.0\.0\.1:\d+)$")


class EmulatorControlError(RuntimeError):
    """A control request was refused or the emulator could not be reached."""


class EmulatorControl:
    """The control routes of a running emulator (see :mod:`settlement.emulator.control`)."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            raise EmulatorControlError(
                f"{method} {path} -> {error.code}: {error.read().decode(errors='replace')}"
            ) from error
        except urllib.error.URLError as error:
            raise EmulatorControlError(f"{method} {path}: {error.reason}") from error
        return json.loads(body) if body else None

    def health(self) -> dict:
        return self._request("GET", "/_coalition/health")

    def reset(self) -> None:
        """Wipe every object, idempotency record, fault and webhook."""
        self._request("DELETE", "/_coalition/data")

    def inject_fault(
        self,
        path_prefix: str,
        mode: str,
        *,
        method: str | None = "POST",
        count: int = 1,
        delay_seconds: float | None = None,
        lost_as: str | None = None,
    ) -> dict:
        """Make the next ``count`` matching requests fail; returns the fault with its id.

        ``mode``: ``error_500`` (answer 500, do nothing), ``timeout`` (sleep
        ``delay_seconds``, default 30, then do nothing) or ``lost_response`` (do the request,
        then drop the connection, or answer 500 with ``lost_as="error_500"``).
        ``method=None`` matches any method.
        """
        fault: dict[str, Any] = {
            "path_prefix": path_prefix,
            "mode": mode,
            "method": method,
            "count": count,
        }
        if delay_seconds is not None:
            fault["delay_seconds"] = delay_seconds
        if lost_as is not None:
            fault["lost_as"] = lost_as
        return self._request("POST", "/_coalition/faults", fault)

    def faults(self) -> list[dict]:
        return self._request("GET", "/_coalition/faults")["faults"]

    def clear_faults(self) -> int:
        return self._request("DELETE", "/_coalition/faults")["cleared"]

    def open_dispute(
        self,
        *,
        payment_intent: str | None = None,
        charge: str | None = None,
        amount: int | None = None,
        reason: str | None = None,
        status: str | None = None,
    ) -> dict:
        """Open a dispute on a succeeded charge (named directly or by its PaymentIntent), as a
        cardholder would; returns the dispute. Stripe's API has no such call."""
        fields = {
            "payment_intent": payment_intent,
            "charge": charge,
            "amount": amount,
            "reason": reason,
            "status": status,
        }
        payload = {name: value for name, value in fields.items() if value is not None}
        return self._request("POST", "/_coalition/disputes", payload)

    def move_dispute(self, dispute_id: str, status: str) -> dict:
        """The card network's decision on a dispute (``won``, ``lost``, ...); returns it."""
        return self._request("POST", f"/_coalition/disputes/{dispute_id}", {"status": status})

    def register_webhook(
        self, webhook_id: str, url: str, secret: str, events: list[str] | None = None
    ) -> None:
        """localstripe's webhook registration: events are POSTed to ``url``, signed with
        ``secret`` (Stripe's ``Stripe-Signature`` scheme), about a second after they occur."""
        payload: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            payload["events"] = events
        self._request("POST", f"/_config/webhooks/{webhook_id}", payload)


class EmulatorProcess:
    """``python -m settlement.emulator`` in a child process, on a free loopback port.

    stdout is read for the ready line (then drained, so the child never blocks on it);
    stderr, the access log, goes to ``log_path``.
    """

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path):
        self.process = process
        self.url = url
        self.log_path = log_path
        self.control = EmulatorControl(url)

    @classmethod
    def start(
        cls, port: int = 0, *, startup_timeout: float = 30.0, python: str = sys.executable
    ) -> EmulatorProcess:
        log = tempfile.NamedTemporaryFile(prefix="stripe-emulator-", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [python, "-m", "settlement.emulator", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()  # the child has its own descriptor
        log_path = Path(log.name)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in process.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, name="stripe-emulator-stdout", daemon=True).start()
        try:
            while True:
                line = lines.get(timeout=startup_timeout)
                if line is None:
                    raise EmulatorControlError(
                        f"the emulator exited with {process.wait()} before it was ready:\n"
                        + cls._tail(log_path)
                    )
                match = READY_PATTERN.match(line)
                if match:
                    return cls(process, match.group(1), log_path)
        except queue.Empty:
            process.kill()
            process.wait()
            raise EmulatorControlError(
                f"the emulator was not ready within {startup_timeout}s:\n" + cls._tail(log_path)
            ) from None

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)
        return self.process.returncode
