"""upload-server under hostile clients, from the outside (issue 8 upload half, issue 9.4 upload
half): HTTP requests refused, temporary files never leak (start-up sweep, kill -9 of a fork child),
a header plus one byte claims no disk, --min-free. Both serve modes."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import muxtest  # noqa: E402

TIMEOUT = muxtest.DEFAULT_TIMEOUT
MIB = 1024 * 1024


def read_all(sock, timeout=TIMEOUT):
    """Everything the server sends until it closes (or resets after sending)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def wait_until(predicate, what, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def dead_pid():
    """A pid that no process has right now (a child that has exited and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class TmpfsMount:
    """A small tmpfs mounted for one test, so "disk full" is quick and harmless."""

    def __init__(self, size):
        self.path = tempfile.mkdtemp(prefix="mux-tmpfs-")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.path],
                                capture_output=True)
        self.mounted = result.returncode == 0
        self.error = result.stderr.decode().strip()

    def close(self):
        if self.mounted:
            subprocess.run(["umount", self.path], check=True)
        os.rmdir(self.path)


class UploadLimitsBase(unittest.TestCase):
    SERVE = "single"

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="mux-upload-limits-")
        self.out = os.path.join(self.work, "out")
        os.mkdir(self.out)
        self.servers = []
        self.mounts = []
        self.sockets = []

    def tearDown(self):
        for sock in self.sockets:
            sock.close()
        for server in self.servers:
            server.stop()
            server.proc.stdout.close()
            server.proc.stderr.close()
            self.assertEqual(server.stderr_lines, [])
        for mount in self.mounts:
            mount.close()
        shutil.rmtree(self.work, ignore_errors=True)

    def server(self, *args, out=None):
        server = muxtest.Server("upload-server", "--serve", self.SERVE, "-v",
                                "--output-dir", out or self.out, *args)
        self.servers.append(server)
        return server

    def tmpfs(self, size):
        mount = TmpfsMount(size)
        if not mount.mounted:
            os.rmdir(mount.path)
            self.skipTest(f"cannot mount a tmpfs here: {mount.error}")
        self.mounts.append(mount)
        return mount.path

    def connect(self, server):
        sock = server.connect()
        self.sockets.append(sock)
        return sock

    def make_file(self, name, size):
        path = os.path.join(self.work, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def upload(self, server, path, *args):
        result = muxtest.run_mux("upload-client", "--port", str(server.port), "--file", path,
                                 *args, timeout=60)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def test_an_http_request_is_refused_and_nothing_is_saved(self):
        server = self.server()
        curl = subprocess.run(["curl", "-sS", "--max-time", "10", "--data-binary", "echo pwned",
                               f"http://127.0.0.1:{server.port}/"], capture_output=True)
        self.assertNotEqual(curl.returncode, 0)  # no HTTP answer, and nothing for curl to show
        server.wait_for_log(r"\[Client 1\] 127\.0\.0\.1:\d+ refused: its first line is an HTTP request line$")
        server.wait_for_log(r"\[Client 1\] .*: incomplete \(refused: an HTTP POST request is not an upload\)$")
        with server.connect() as sock:
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            self.assertEqual(read_all(sock), b"ERR refused: an HTTP GET request is not an upload\n")
        self.assertEqual(os.listdir(self.out), [])

    def test_a_raw_upload_that_starts_with_get_is_still_saved(self):
        server = self.server()
        data = b"GET milk, eggs\nGET bread\n"
        with server.connect() as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            self.assertTrue(read_all(sock).startswith(b"OK 25 "))
        with open(os.path.join(self.out, "upload-1.bin"), "rb") as f:
            self.assertEqual(f.read(), data)

    def test_stale_temporary_files_are_removed_at_start(self):
        stale = f".mux-upload-{dead_pid()}-7.part"
        live = f".mux-upload-{os.getpid()}-1.part"  # this test process runs: not stale
        for name in (stale, live, ".mux-upload-notes.txt", "kept.txt"):
            with open(os.path.join(self.out, name), "wb") as f:
                f.write(b"x")
        server = self.server()
        server.wait_for_log(rf"removed 1 stale temporary file\(s\) from {re.escape(self.out)}$")
        self.assertEqual(sorted(os.listdir(self.out)), sorted([live, ".mux-upload-notes.txt", "kept.txt"]))

    def test_a_header_and_one_byte_cannot_claim_the_disk(self):
        # Before: each such connection made the server fallocate 64 MiB and keep it, so two of
        # them filled this 100 MiB filesystem and the honest 40 MiB upload failed with ENOSPC.
        disk = self.tmpfs("100m")
        server = self.server(out=disk)
        for n in range(6):
            sock = self.connect(server)
            sock.sendall(b"MUXUP/1 10000000000 claim%d\nx" % n)
        wait_until(lambda: len([n for n in os.listdir(disk) if n.endswith(".part")]) == 6,
                   "six temporary files")
        honest = self.make_file("honest.bin", 40 * MIB)
        code, out, err = self.upload(server, honest)
        self.assertEqual(code, 0, f"stdout={out!r} stderr={err!r}")
        self.assertEqual(os.path.getsize(os.path.join(disk, "honest.bin")), 40 * MIB)
        usage = shutil.disk_usage(disk)
        self.assertLess(usage.used, 41 * MIB)  # the six claims hold a few blocks at most

    def test_min_free_refuses_an_upload_below_it(self):
        server = self.server("--min-free", "1000T")
        path = self.make_file("small.bin", 1000)
        code, out, err = self.upload(server, path)
        self.assertEqual(code, 1)
        self.assertRegex(err, r"refused the upload: disk full: less than 1000\.0 TiB free")
        server.wait_for_log(r"\[Client 1\] .* refused: .* free in .*, --min-free is 1000\.0 TiB$")
        self.assertEqual(os.listdir(self.out), [])

    def test_min_free_ends_an_upload_that_fills_the_disk(self):
        disk = self.tmpfs("48m")
        server = self.server("--min-free", "24M", out=disk)
        path = self.make_file("big.bin", 40 * MIB)
        code, out, err = self.upload(server, path)
        self.assertEqual(code, 1)
        self.assertIn("refused the upload: disk full: less than 24.0 MiB free", err)
        server.wait_for_log(r"\[Client 1\] .* stopped: .* free in .*, --min-free is 24\.0 MiB$")
        wait_until(lambda: os.listdir(disk) == [], "the temporary file to go")


class SingleLoopUploadLimits(UploadLimitsBase):
    SERVE = "single"


class ForkUploadLimits(UploadLimitsBase):
    SERVE = "fork"

    def test_kill_9_of_a_child_mid_upload_leaves_no_file(self):
        server = self.server()
        sock = self.connect(server)
        sock.sendall(b"MUXUP/1 10000000 victim.bin\n" + b"v" * 300000)
        pid = int(server.wait_for_log(r"\[Client 1\] served by process (\d+)").group(1))
        wait_until(lambda: any(n.endswith(".part") for n in os.listdir(self.out)), "the temporary file")
        os.kill(pid, signal.SIGKILL)
        server.wait_for_log(rf"process {pid} was killed by signal 9 ")
        server.wait_for_log(rf"removed 1 temporary file\(s\) of process {pid} from ")
        self.assertEqual(os.listdir(self.out), [])
        # The server goes on.
        path = self.make_file("after.bin", 1000)
        code, out, err = self.upload(server, path)
        self.assertEqual(code, 0, err)
        self.assertEqual(os.listdir(self.out), ["after.bin"])


del UploadLimitsBase  # only its serve-mode subclasses run

if __name__ == "__main__":
    muxtest.main()
