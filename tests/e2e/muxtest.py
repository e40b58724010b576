"""Shared helpers for mux's end-to-end tests: start the real binary on a free loopback port and
talk to it with real sockets. Standard library only.

Every server subcommand logs `listening on HOST:PORT (...)` as its first line; servers are
started with --port 0 and the port is read from that line, so tests never race for a port.
"""

import atexit
import fcntl
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

MUX = os.environ.get("MUX", os.path.join(os.path.dirname(__file__), "..", "..", "build", "mux"))
HOST = "127.0.0.1"
DEFAULT_TIMEOUT = float(os.environ.get("MUX_TEST_TIMEOUT", "10"))

# upload-client keeps its resume keys under $XDG_STATE_HOME/mux: every mux a test starts gets a
# state directory of the suite's own, removed at exit, so test runs never write into the home of
# whoever runs them (a test that checks the keys sets its own).
_STATE_HOME = tempfile.mkdtemp(prefix="mux-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE_HOME
atexit.register(shutil.rmtree, _STATE_HOME, ignore_errors=True)

# Every process a test started through Server or track(): whatever is still running when the
# test program ends (a test failed between starting it and registering its cleanup) is killed
# then, so no server outlives its suite.
_started = []


def track(proc):
    """Registers `proc` to be killed at exit if it is still running then; returns it."""
    _started.append(proc)
    return proc


@atexit.register
def _kill_leftovers():
    for proc in _started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def built_with_sanitizers():
    """True for CI's second pass (AddressSanitizer + UBSan build): its allocator makes memory
    figures meaningless, and LeakSanitizer cannot run under ptrace (strace)."""
    with open(MUX, "rb") as f:
        return b"__asan_init" in f.read()


def env_for_ptrace(env=None):
    """The environment for a mux run under strace: LeakSanitizer stops with a fatal error under
    ptrace, so a sanitizer build is told not to look for leaks there (later options win)."""
    env = dict(os.environ if env is None else env)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    return env
# chat-server flags that lift the per-client rate limits, for tests of bulk relaying rather than
# of flow control (test_hostile_chat.py tests the limits themselves).
CHAT_UNLIMITED = ["--line-rate", "1000000000", "--line-burst", "1000000000",
                  "--byte-rate", "1G", "--byte-burst", "1G"]


class Server:
    """A running `mux <subcommand>` whose stdout/stderr are collected line by line."""

    def __init__(self, subcommand, *args, host=HOST, cwd=None, env=None, preexec_fn=None):
        self.args = [MUX, subcommand, "--host", host, "--port", "0", *args]
        self.collect(subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            cwd=cwd, env=env, preexec_fn=preexec_fn))
        try:
            match = self.wait_for_log(r"listening on (\S+):(\d+)")
        except BaseException:
            self.stop()  # nobody holds this server yet to stop it
            raise
        self.port = int(match.group(2))
        self.host = host

    def collect(self, proc):
        """Takes `proc` (stdout and stderr pipes) as this server and collects its lines; for a
        subclass that starts the process its own way (socket activation, a wrapper)."""
        self.proc = track(proc)
        self.stdout_lines = []
        self.raw_stdout = []  # the same lines as bytes: proves no raw control byte reached the log
        self.stderr_lines = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._pump, args=(proc.stdout, self.stdout_lines), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, self.stderr_lines), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream, lines):
        for raw in iter(stream.readline, b""):
            with self._cond:
                if lines is self.stdout_lines:
                    self.raw_stdout.append(raw)
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for_log(self, pattern, timeout=DEFAULT_TIMEOUT, stream="stdout", start=0):
        """Waits for a log line matching `pattern` (searching from line index `start`)."""
        lines = self.stdout_lines if stream == "stdout" else self.stderr_lines
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    raise AssertionError(
                        f"no {stream} line matching {pattern!r} within {timeout}s; "
                        f"stdout={self.stdout_lines[-20:]!r} stderr={self.stderr_lines[-20:]!r}")
                self._cond.wait(min(remaining, 0.1))

    def log_count(self, pattern):
        regex = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self.stdout_lines if regex.search(line))

    def connect(self, timeout=DEFAULT_TIMEOUT):
        return connect(self.port, host=self.host, timeout=timeout)

    def signal(self, signo):
        self.proc.send_signal(signo)

    def wait(self, timeout=DEFAULT_TIMEOUT):
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not any(reader.is_alive() for reader in self._readers):
                stream.close()
        return code

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL) and returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout=DEFAULT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class ServerCases:
    """Mixin for cases run once per serve mode: a subclass sets MODE (and SUBCOMMAND when it is
    not chat-server). start() runs the server and, at cleanup, checks it ends cleanly: status 0
    and nothing on stderr, which is also where the sanitizers report, from the server and from
    fork-mode children alike."""

    SUBCOMMAND = "chat-server"
    MODE = "single"

    def start(self, *args):
        server = Server(self.SUBCOMMAND, "--serve", self.MODE, *args)
        self.addCleanup(self.assert_clean_exit, server)
        return server

    def assert_clean_exit(self, server):
        self.assertEqual(server.stop(), 0, server.stdout_lines[-20:])
        self.assertEqual(server.stderr_lines, [])


def connect(port, host=HOST, timeout=DEFAULT_TIMEOUT):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


def connect_from(source, port, timeout=DEFAULT_TIMEOUT):
    """A client socket bound to the loopback address `source` (another "machine")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect((HOST, port))
    return sock


def raise_fd_limit(wanted):
    """Raises this process's soft RLIMIT_NOFILE towards `wanted` (at most the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect_retrying(port, host=HOST, timeout=DEFAULT_TIMEOUT):
    """Connects, retrying while the port refuses (a server started with -q, or with a fixed port,
    prints no `listening on` line to wait for)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(port, host=host, timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class LineReader:
    """Reads `\\n`-terminated lines from a socket with a deadline."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def line(self, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no complete line within {timeout}s; have {self.buffer!r}")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; have {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode("utf-8", "replace")

    def lines(self, count, timeout=DEFAULT_TIMEOUT):
        deadline = time.monotonic() + timeout
        return [self.line(max(0.001, deadline - time.monotonic())) for _ in range(count)]

    def expect_nothing(self, wait=0.3):
        """Asserts no bytes arrive within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        raise AssertionError(f"expected silence, got {self.buffer + chunk!r}")

    def expect_eof(self, timeout=DEFAULT_TIMEOUT):
        """Reads until EOF, returning whatever arrived before it."""
        deadline = time.monotonic() + timeout
        data = self.buffer
        self.buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection not closed within {timeout}s; have {data!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def run_mux(*args, input=None, timeout=DEFAULT_TIMEOUT, env=None):
    """Runs `mux args...` to completion; returns CompletedProcess with text output."""
    return subprocess.run([MUX, *args], input=input, capture_output=True, timeout=timeout, env=env)


def wait_for_checkpoint(directory, at_least, timeout):
    """Waits until an upload's resume record (a hidden *.rec in `directory`) shows a checkpoint
    of at least `at_least` bytes; returns that offset, or None when none did within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir(directory):
            if name.startswith(".") and name.endswith(".rec"):
                try:
                    with open(os.path.join(directory, name)) as f:
                        match = re.search(r"^offset=(\d+)$", f.read(), re.M)
                except FileNotFoundError:
                    continue
                if match and int(match.group(1)) >= at_least:
                    return int(match.group(1))
        time.sleep(0.02)
    return None


def wait_until_unlocked(directory, timeout):
    """Waits until no connection holds a resumable partial in `directory` (a hidden *.part): a
    server logs an interrupted upload as incomplete before its last checkpoint is written (with
    --sync full on the helper thread, in fork mode until the child exits), and until then the
    partial is locked, so a new try would read ERR busy. Fails (AssertionError) after `timeout`."""
    deadline = time.monotonic() + timeout
    for name in os.listdir(directory):
        if not (name.startswith(".") and name.endswith(".part")):
            continue
        try:
            f = open(os.path.join(directory, name), "rb")
        except FileNotFoundError:
            continue  # committed or removed meanwhile: nobody holds it
        with f:
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{name} still locked after {timeout} s")
                    time.sleep(0.02)


def xxh128(path):
    """The XXH3-128 of a file as upload-server and upload-client print it (by xxhsum)."""
    out = subprocess.run(["xxhsum", "-H2", path], check=True, capture_output=True, text=True).stdout
    return out.split()[0].split("_")[-1]


def xxh128_of_bytes(data):
    out = subprocess.run(["xxhsum", "-H2", "-"], input=data, check=True,
                         capture_output=True).stdout.decode()
    return out.split()[0].split("_")[-1]


class UploadCase(unittest.TestCase):
    """Base of the upload-server test classes: a scratch directory with an empty output directory
    (self.out), the servers started through upload_server() stopped at the end with nothing on
    their stderr (a sanitizer report would land there), files of random bytes, and upload-client
    runs. SERVE is the serve mode of the subclass."""
    SERVE = "single"
    WORK_PREFIX = "mux-upload-test-"

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix=self.WORK_PREFIX)
        self.out = os.path.join(self.work, "out")
        os.mkdir(self.out)
        self.servers = []

    def tearDown(self):
        self.stop_servers()
        shutil.rmtree(self.work, ignore_errors=True)

    def stop_servers(self):
        for server in self.servers:
            server.stop()
            server.proc.stdout.close()
            server.proc.stderr.close()
            # Nothing in these tests is a server error.
            self.assertEqual(server.stderr_lines, [])

    def upload_server(self, *args, **kwargs):
        """`mux upload-server --serve SERVE args...` (kwargs go to Server), stopped by tearDown."""
        server = Server("upload-server", "--serve", self.SERVE, *args, **kwargs)
        self.servers.append(server)
        return server

    def kill_server(self, server):
        """SIGKILL of the server and, in fork mode, of its children: nothing can checkpoint."""
        with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
            children = [int(pid) for pid in f.read().split()]
        server.proc.kill()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.wait()
        self.servers.remove(server)
        server.proc.stdout.close()
        server.proc.stderr.close()

    def make_file(self, name, size):
        path = os.path.join(self.work, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def saved(self):
        """Everything in the output directory, hidden temporary files included."""
        return sorted(os.listdir(self.out))

    def read_saved(self, name):
        with open(os.path.join(self.out, name), "rb") as f:
            return f.read()

    def upload_client(self, server, path, *args, input=None, timeout=60, host=HOST):
        """Runs upload-client to completion; returns (exit status, stdout, stderr) as text."""
        result = run_mux("upload-client", "--host", host, "--port", str(server.port),
                         "--file", path, *args, input=input, timeout=timeout)
        return result.returncode, result.stdout.decode(), result.stderr.decode()


def main():
    unittest.main(verbosity=2)


def redis_client_ports(pid, redis_port):
    """The local ports of process `pid`'s TCP connections to `redis_port` on loopback."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(remote.split(":")[1], 16) == redis_port:
                ports.append(int(local.split(":")[1], 16))
    return ports
