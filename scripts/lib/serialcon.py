"""Driving the appliance's serial console under QEMU from a script.

`Serial` starts scripts/run-qemu (with --no-reboot) with stdin/stdout as
the serial line, echoes everything the appliance prints, and offers
`wait_for` (a pattern after a position), `send` (one line, Enter as CR,
as a terminal sends it) and `finish` (QEMU must exit with status 0).
Every failure ends the script with one line on stderr and exit 1.
Used by scripts/boot-smoke and scripts/demo-session.
"""
import os
import select
import subprocess
import sys
import time

PROMPT = b"airlock> "


class Serial:
    def __init__(self, name: str, run_qemu_args: list):
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cmd = [os.path.join(here, "run-qemu"), "--no-reboot", *run_qemu_args]
        self.name = name
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.buf = b""
        self.t0 = time.monotonic()

    def fail(self, msg: str) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        sys.stdout.flush()
        sys.exit(f"\n{self.name}: {msg}")

    def pump(self, deadline: float) -> bool:
        """Reads one chunk (echoing it); False on EOF."""
        left = max(0.0, min(1.0, deadline - time.monotonic()))
        r, _, _ = select.select([self.p.stdout], [], [], left)
        if not r:
            return True
        chunk = os.read(self.p.stdout.fileno(), 4096)
        if not chunk:
            return False
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
        self.buf += chunk
        return True

    def wait_for(self, pattern: bytes, secs: float, since: int) -> int:
        """The position just after the first `pattern` at or after `since`."""
        deadline = time.monotonic() + secs
        while True:
            i = self.buf.find(pattern, since)
            if i >= 0:
                return i + len(pattern)
            if time.monotonic() > deadline:
                self.fail(f"timed out after {secs:.0f} s waiting for {pattern.decode()!r} on the console")
            if not self.pump(deadline):
                self.fail(f"QEMU exited (status {self.p.wait()}) before {pattern.decode()!r} appeared")

    def send(self, line: str) -> None:
        self.p.stdin.write(line.encode() + b"\r")
        self.p.stdin.flush()

    def answer(self, question: bytes, line: str, secs: float, since: int) -> int:
        """Waits for `question`, then types `line`; the position after it."""
        pos = self.wait_for(question, secs, since)
        self.send(line)
        return pos

    def command(self, line: str, prompt: bytes, secs: float, since: int) -> tuple:
        """Types `line` at the prompt found at or after `since`; returns
        (the text printed up to the next prompt, the position after it)."""
        pos = self.wait_for(prompt, secs, since)
        self.send(line)
        end = self.wait_for(prompt, secs, pos)
        return self.buf[pos:end - len(prompt)].decode("utf-8", "replace"), end

    def finish(self, secs: float) -> None:
        """After `poweroff`: QEMU must exit with status 0 within `secs`."""
        deadline = time.monotonic() + secs
        while self.pump(deadline):
            if time.monotonic() > deadline:
                self.fail(f"QEMU did not exit within {secs:.0f} s of poweroff")
        rc = self.p.wait()
        if rc != 0:
            self.fail(f"QEMU exited with status {rc} after poweroff")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
