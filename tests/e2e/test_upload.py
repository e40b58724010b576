"""upload-server and upload-client end to end: the real binary on loopback, in both serve modes.

Every upload's hash is checked against `xxhsum -H2`, the independent XXH3-128 implementation the
protocol promises to match, and every saved file byte for byte against what was sent.
"""

import hashlib
import os
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import muxtest

MIB = 1 << 20
TIMEOUT = muxtest.DEFAULT_TIMEOUT
RECEIVED = r"Received (\d+) bytes from \[Client (\d+)\] \S+ in [0-9.]+ s"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_reply(sock, timeout=TIMEOUT):
    """Everything the server sends until it closes the connection."""
    return muxtest.LineReader(sock).expect_eof(timeout).decode("utf-8", "replace")


def raw_exchange(port, data, host=muxtest.HOST):
    """Sends `data`, half-closes, and returns the server's whole reply."""
    with muxtest.connect(port, host=host) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return read_reply(sock)


def zombie_children(pid):
    """Pids of children of `pid` that have exited but were not reaped."""
    zombies = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[1]) == pid and fields[0] == "Z":
            zombies.append(int(entry))
    return zombies


class UploadTestBase(muxtest.UploadCase):
    @classmethod
    def setUpClass(cls):
        cls.data_dir = tempfile.mkdtemp(prefix="mux-upload-data-")
        cls.big_file = os.path.join(cls.data_dir, "big.bin")
        with open(cls.big_file, "wb") as f:
            f.write(os.urandom(100 * MIB))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.data_dir, ignore_errors=True)

    def server(self, *args, output_dir=True, preexec_fn=None, host=muxtest.HOST):
        extra = ["--output-dir", self.out] if output_dir else []
        return self.upload_server(*extra, *args, preexec_fn=preexec_fn, host=host)

    def wait_received(self, server, count, timeout=TIMEOUT):
        """Waits until `count` uploads were logged as completed."""
        deadline = time.monotonic() + timeout
        while server.log_count(r"Received \d+ bytes .* s \(") < count:
            if time.monotonic() > deadline:
                self.fail(f"fewer than {count} completed uploads logged: {server.stdout_lines[-10:]}")
            time.sleep(0.02)

    def assertConfirmed(self, code, out, err, path, saved_as=""):
        """The client's summary confirms `path`; `saved_as` is the name the server reported
        (default: the file's own name), None for a server that discards."""
        self.assertEqual(code, 0, f"stdout={out!r} stderr={err!r}")
        self.assertEqual(err, "")
        size = os.path.getsize(path)
        summary = out.strip().splitlines()[-1]
        if saved_as == "":
            saved_as = os.path.basename(path)
        saved = "" if saved_as is None else f", saved as {re.escape(saved_as)}"
        self.assertRegex(summary,
                         rf"^Sent {size} bytes in [0-9.]+ s \(.+\), verified {muxtest.xxh128(path)}{saved}$")


class UploadTests:
    """Run once per serve mode (see the subclasses at the end)."""

    def test_100_mib_upload_is_saved_byte_identical(self):
        server = self.server()
        code, out, err = self.upload_client(server, self.big_file, "--name", "big copy.bin")
        self.assertConfirmed(code, out, err, self.big_file, saved_as="big copy.bin")
        self.assertEqual(out.splitlines()[:10], [f"Sent {n} MiB" for n in range(10, 101, 10)])
        self.assertEqual(self.saved(), ["big copy.bin"])
        saved = os.path.join(self.out, "big copy.bin")
        self.assertEqual(sha256(saved), sha256(self.big_file))
        self.assertEqual(muxtest.xxh128(saved), muxtest.xxh128(self.big_file))
        match = server.wait_for_log(RECEIVED + r" \([0-9.]+ (?:[KMGT]i)?B/s\)$")
        self.assertEqual(match.group(1), str(100 * MIB))
        self.assertEqual(match.group(2), "1")

    def test_raw_stream_without_header(self):
        server = self.server()
        data = os.urandom(3 * MIB + 17)
        reply = raw_exchange(server.port, data)
        self.assertEqual(reply, f"OK {len(data)} {muxtest.xxh128_of_bytes(data)}\n")
        self.wait_received(server, 1)
        self.assertEqual(self.saved(), ["upload-1.bin"])
        self.assertEqual(self.read_saved("upload-1.bin"), data)

    def test_tiny_raw_stream_that_looks_like_the_start_of_a_header(self):
        server = self.server()
        self.assertEqual(raw_exchange(server.port, b"MUXUP/1"), f"OK 7 {muxtest.xxh128_of_bytes(b'MUXUP/1')}\n")
        self.wait_received(server, 1)
        self.assertEqual(self.read_saved("upload-1.bin"), b"MUXUP/1")

    @unittest.skipUnless(shutil.which("ncat"), "ncat is not installed")
    def test_raw_stream_from_ncat_send_only(self):
        server = self.server()
        path = self.make_file("from-ncat.bin", 2 * MIB)
        with open(path, "rb") as f:
            subprocess.run(["ncat", "--send-only", muxtest.HOST, str(server.port)], stdin=f,
                           check=True, timeout=TIMEOUT)
        self.wait_received(server, 1)
        self.assertEqual(self.saved(), ["upload-1.bin"])
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "upload-1.bin")), muxtest.xxh128(path))

    def test_stdin_is_uploaded_under_the_given_name(self):
        server = self.server()
        data = os.urandom(MIB + 5)
        code, out, err = self.upload_client(server, "-", "--name", "notes.tar", input=data)
        self.assertEqual(code, 0, err)
        self.assertRegex(out, rf"Sent {len(data)} bytes in .*, verified {muxtest.xxh128_of_bytes(data)}, "
                              rf"saved as notes\.tar\n$")
        self.assertEqual(self.saved(), ["notes.tar"])
        self.assertEqual(self.read_saved("notes.tar"), data)

    def test_stdin_that_is_a_partly_read_file_sends_the_rest(self):
        server = self.server()
        path = self.make_file("whole.bin", 3 * MIB)
        with open(path, "rb") as f:
            f.seek(MIB + 3)
            result = subprocess.run([muxtest.MUX, "upload-client", "--port", str(server.port),
                                     "--file", "-"], stdin=f, capture_output=True, timeout=TIMEOUT)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(path, "rb") as f:
            rest = f.read()[MIB + 3:]
        self.assertEqual(self.saved(), ["stdin"])
        self.assertEqual(self.read_saved("stdin"), rest)

    def test_two_uploads_with_the_same_name_at_once(self):
        server = self.server()
        first, second = os.urandom(MIB), os.urandom(MIB)
        a, b = server.connect(), server.connect()
        try:
            for sock, data in ((a, first), (b, second)):
                sock.sendall(b"MUXUP/1 %d same.txt\n" % len(data) + data[:1000])
            for sock, data in ((a, first), (b, second)):
                sock.sendall(data[1000:])
                sock.shutdown(socket.SHUT_WR)
            replies = [read_reply(a), read_reply(b)]
        finally:
            a.close()
            b.close()
        self.assertEqual(replies, [f"OK {MIB} {muxtest.xxh128_of_bytes(first)}\n",
                                   f"OK {MIB} {muxtest.xxh128_of_bytes(second)}\n"])
        self.wait_received(server, 2)
        self.assertEqual(self.saved(), ["same.txt", "same.txt.1"])
        self.assertEqual({self.read_saved("same.txt"), self.read_saved("same.txt.1")},
                         {first, second})
        # And a third, later, does not overwrite either.
        path = self.make_file("same.txt", 1000)
        self.assertConfirmed(*self.upload_client(server, path), path, saved_as="same.txt.2")
        self.assertEqual(self.saved(), ["same.txt", "same.txt.1", "same.txt.2"])

    def test_a_stalled_client_does_not_delay_another(self):
        server = self.server()
        stalled = server.connect()
        try:
            stalled.sendall(b"MUXUP/1 1000 stalled.bin\n" + b"s" * 400)
            path = self.make_file("quick.bin", 5 * MIB)
            self.assertConfirmed(*self.upload_client(server, path, timeout=TIMEOUT), path)
            self.assertEqual(self.saved()[-1], "quick.bin")
            stalled.sendall(b"s" * 600)
            stalled.shutdown(socket.SHUT_WR)
            # Everything the stalled client ever got: one OK, so nothing came while it waited.
            self.assertEqual(read_reply(stalled), f"OK 1000 {muxtest.xxh128_of_bytes(b's' * 1000)}\n")
        finally:
            stalled.close()
        self.wait_received(server, 2)
        self.assertEqual([n for n in self.saved() if not n.startswith(".")], ["quick.bin", "stalled.bin"])

    def test_a_client_killed_mid_upload_leaves_nothing(self):
        server = self.server()
        script = (
            "import socket, sys, time\n"
            f"s = socket.create_connection(('{muxtest.HOST}', {server.port}))\n"
            "s.sendall(b'MUXUP/1 10000000 victim.bin\\n' + b'v' * 300000)\n"
            "print('sent', flush=True)\n"
            "time.sleep(60)\n")
        victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        try:
            self.assertEqual(victim.stdout.readline(), b"sent\n")
            # No need to wait for the server to read: the kernel still delivers what the killed
            # process had sent, then the FIN.
            victim.kill()
        finally:
            victim.wait()
            victim.stdout.close()
        match = server.wait_for_log(r"Received (\d+) bytes from \[Client 1\] .*: incomplete \((.*)\)$")
        self.assertEqual(match.group(1), "300000")
        self.assertEqual(match.group(2), "only 300000 of 10000000 bytes arrived")
        self.assertEqual(self.saved(), [])
        # The server goes on.
        path = self.make_file("after.bin", 1000)
        self.assertConfirmed(*self.upload_client(server, path), path)
        self.assertEqual(self.saved(), ["after.bin"])

    def test_max_size(self):
        server = self.server("--max-size", "1M")
        exact = self.make_file("exact.bin", MIB)
        self.assertConfirmed(*self.upload_client(server, exact), exact)

        too_big = self.make_file("too-big.bin", 20 * MIB)
        code, out, err = self.upload_client(server, too_big)
        self.assertEqual(code, 1, out)
        self.assertEqual(err, f"mux: error: {muxtest.HOST}:{server.port} refused the upload: "
                              f"too large: {20 * MIB} bytes, the limit is {MIB}\n")

        with server.connect() as sock:  # a raw stream is cut off once it passes the limit
            sock.sendall(b"r" * (MIB + 1))
            self.assertEqual(read_reply(sock), f"ERR too large: more than the limit of {MIB} bytes\n")
        server.wait_for_log(r"\[Client 3\] .*: incomplete \(too large: more than the limit")
        self.assertEqual(self.saved(), ["exact.bin"])

    def test_hostile_names_stay_inside_the_output_directory(self):
        server = self.server()
        names = {"../x": "x", "/etc/passwd": "passwd", "a\x1b[31mb\tc": "a_[31mb_c",
                 ".hidden": "hidden", "..": "upload-5.bin"}
        for name in names:
            path = self.make_file("payload", 100)
            code, out, err = self.upload_client(server, path, "--name", name)
            self.assertEqual(code, 0, err)
        reply = raw_exchange(server.port, b"MUXUP/1 5 \nempty")  # an empty name
        self.assertEqual(reply, f"OK 5 {muxtest.xxh128_of_bytes(b'empty')}\n")
        reply = raw_exchange(server.port, b"MUXUP/1 5 %2E%2E%2F%2E%2E%2Fevil%00\nevil!")
        self.assertEqual(reply, f"OK 5 {muxtest.xxh128_of_bytes(b'evil!')}\n")
        self.wait_received(server, 7)
        self.assertEqual(self.saved(), sorted(list(names.values()) + ["upload-6.bin", "evil_"]))
        self.assertEqual(sorted(os.listdir(self.work)), ["out", "payload"])

    def test_bad_headers_are_refused(self):
        server = self.server()
        cases = [
            (b"MUXUP/1 12x name\nhello", "ERR bad header: size is not a number\n"),
            (b"MUXUP/1 5\nhello", "ERR bad header: missing name\n"),
            (b"MUXUP/1 5 " + b"n" * 5000, "ERR bad header: line longer than 4096 bytes\n"),
        ]
        for sent, expected in cases:
            with server.connect() as sock:
                sock.sendall(sent)  # no half-close: each is refused as soon as it is seen
                self.assertEqual(read_reply(sock), expected)
        for number in (1, 2, 3):
            server.wait_for_log(rf"Received 0 bytes from \[Client {number}\] .*: incomplete \(bad header: ")
        self.assertEqual(self.saved(), [])

    def test_disk_full_fails_only_that_upload(self):
        limit = 2 * MIB

        def limit_file_size():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        server = self.server(preexec_fn=limit_file_size)
        too_big = self.make_file("too-big.bin", 3 * MIB)
        code, out, err = self.upload_client(server, too_big)
        self.assertEqual(code, 1, out)
        self.assertEqual(err, f"mux: error: {muxtest.HOST}:{server.port} refused the upload: "
                              "disk error: File too large\n")
        server.wait_for_log(r"\[Client 1\] .*: incomplete \(disk error: File too large\)")
        self.assertEqual(self.saved(), [])
        small = self.make_file("small.bin", MIB)
        self.assertConfirmed(*self.upload_client(server, small), small)
        self.assertEqual(self.saved(), ["small.bin"])
        self.assertIsNone(server.proc.poll())

    def test_sigterm_lets_uploads_in_flight_finish_then_ends_the_rest(self):
        server = self.server("-v")
        finishing, abandoned = server.connect(), server.connect()
        try:
            finishing.sendall(b"MUXUP/1 10 finishing.bin\nfinis")
            server.wait_for_log(r"\[Client 1\] .*header: 10 bytes")
            abandoned.sendall(b"MUXUP/1 10 abandoned.bin\naband")
            server.wait_for_log(r"\[Client 2\] .*header: 10 bytes")
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            server.wait_for_log(r"shutting down")
            with socket.socket() as late, self.assertRaises(ConnectionRefusedError):
                late.connect((muxtest.HOST, server.port))
            finishing.sendall(b"hing!")
            finishing.shutdown(socket.SHUT_WR)
            self.assertEqual(read_reply(finishing), f"OK 10 {muxtest.xxh128_of_bytes(b'finishing!')}\n")
            self.assertEqual(read_reply(abandoned, timeout=15), "ERR shutting down\n")
            self.assertEqual(server.wait(timeout=15), 0)
            self.assertGreater(time.monotonic() - started, 3)  # the grace was given
        finally:
            finishing.close()
            abandoned.close()
        self.assertEqual(self.saved(), ["finishing.bin"])
        self.assertEqual(server.log_count(r"\[Client 2\] .*: incomplete \(shutting down\)"), 1)

    def test_a_connection_that_sends_nothing_is_not_an_upload(self):
        server = self.server("-v")
        muxtest.connect(server.port).close()
        server.wait_for_log(r"\[Client 1\] .*closed without sending anything")
        reset = muxtest.connect(server.port)  # and one that resets instead of closing
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        server.wait_for_log(r"\[Client 2\] .*closed without sending anything")
        path = self.make_file("real.bin", 1000)
        self.assertConfirmed(*self.upload_client(server, path), path)
        self.wait_received(server, 1)
        # Both ended (logged above) as no upload at all: neither received nor incomplete.
        self.assertEqual(server.log_count(r"Received"), 1)
        self.assertEqual(server.log_count(r"Received .*\[Client 3\]"), 1)
        self.assertEqual(self.saved(), ["real.bin"])

    def test_an_empty_file(self):
        server = self.server()
        path = self.make_file("empty.txt", 0)
        code, out, err = self.upload_client(server, path)
        self.assertConfirmed(code, out, err, path)
        self.assertRegex(out, rf"^Sent 0 bytes in [0-9.]+ s \(0 B/s\), verified {muxtest.xxh128(path)}, "
                              rf"saved as empty\.txt\n$")
        self.assertEqual(self.saved(), ["empty.txt"])
        self.assertEqual(self.read_saved("empty.txt"), b"")
        # The OK for an empty file can come before the client's reader has said it is at the
        # end; the soak run caught the client calling that OK premature. Again and again:
        for attempt in range(20):
            code, out, err = self.upload_client(server, path)
            self.assertEqual((code, err), (0, ""), f"attempt {attempt + 2}")

    def test_quiet_and_verbose_client(self):
        server = self.server()
        path = self.make_file("q.bin", 11 * MIB)
        code, out, err = self.upload_client(server, path, "-q")
        self.assertEqual((code, out, err), (0, "", ""))
        code, out, err = self.upload_client(server, path, "-v", "--name", "v.bin")
        self.assertEqual(code, 0)
        self.assertEqual(err, f'connected to {muxtest.HOST}:{server.port}; sending {11 * MIB} bytes as "v.bin"\n')
        self.assertEqual(out.splitlines()[0], "Sent 10 MiB")
        self.assertEqual(self.saved(), ["q.bin", "v.bin"])

    def test_discarding_server_counts_and_hashes(self):
        server = self.server(output_dir=False)
        code, out, err = self.upload_client(server, self.big_file)
        self.assertConfirmed(code, out, err, self.big_file, saved_as=None)
        self.assertEqual(self.saved(), [])

    def test_the_saved_name_is_replied_only_when_asked(self):
        server = self.server()
        data = b"named"
        ok = f"OK 5 {muxtest.xxh128_of_bytes(data)}"
        # An ncat user or an older client: the reply stays exactly OK <bytes> <hash>.
        self.assertEqual(raw_exchange(server.port, b"MUXUP/1 5 a%20b.txt\n" + data), ok + "\n")
        # Asked for: the name it was saved under, percent-encoded like the header's.
        self.assertEqual(raw_exchange(server.port, b"MUXUP/1 5 a%20b.txt reply-name=1\n" + data),
                         ok + " name=a%20b.txt.1\n")
        # Sanitized and made unique before it is told: the reply names the file that exists.
        self.assertEqual(raw_exchange(server.port, b"MUXUP/1 5 ../.x reply-name=1\n" + data),
                         ok + " name=x\n")
        self.assertEqual(self.saved(), ["a b.txt", "a b.txt.1", "x"])
        # A server that discards has no name to tell.
        discarding = self.server(output_dir=False)
        self.assertEqual(raw_exchange(discarding.port, b"MUXUP/1 5 a reply-name=1\n" + data),
                         ok + "\n")
        self.assertEqual(self.saved(), ["a b.txt", "a b.txt.1", "x"])

    def test_ipv6_loopback(self):
        server = self.server(host="::1")
        path = self.make_file("six.bin", 1000)
        self.assertConfirmed(*self.upload_client(server, path, host="::1"), path)
        server.wait_for_log(r"Received 1000 bytes from \[Client 1\] \[::1\]:\d+ in ")

    def test_max_clients_makes_the_next_upload_wait(self):
        server = self.server("-v", "--max-clients", "1")
        first = server.connect()
        try:
            first.sendall(b"MUXUP/1 4 first.bin\nfi")
            server.wait_for_log(r"\[Client 1\] .*header: 4 bytes")
            with server.connect() as second:
                second.sendall(b"MUXUP/1 6 second.bin\nsecond")
                second.shutdown(socket.SHUT_WR)
                first.sendall(b"st")
                first.shutdown(socket.SHUT_WR)
                self.assertEqual(read_reply(first), f"OK 4 {muxtest.xxh128_of_bytes(b'fist')}\n")
                self.assertEqual(read_reply(second), f"OK 6 {muxtest.xxh128_of_bytes(b'second')}\n")
        finally:
            first.close()
        self.wait_received(server, 2)
        self.assertEqual(self.saved(), ["first.bin", "second.bin"])
        # The second waited in the backlog: it was accepted only after the first was done.
        log = server.stdout_lines
        first_done = next(i for i, line in enumerate(log) if re.search(r"Received 4 bytes .*\[Client 1\]", line))
        second_accepted = next(i for i, line in enumerate(log) if re.search(r"\[Client 2\] .*connected", line))
        self.assertLess(first_done, second_accepted, log)


class ClientVerificationTests(unittest.TestCase):
    """upload-client against fake servers: it exits 0 only when count and hash are confirmed."""

    def listener(self):
        listener = socket.socket()
        listener.bind((muxtest.HOST, 0))
        listener.listen(4)
        self.addCleanup(listener.close)
        return listener

    def assertNoConnection(self, listener):
        """Nothing connected (a finished client's connection would be waiting in the backlog)."""
        listener.setblocking(False)
        with self.assertRaises(BlockingIOError):
            listener.accept()[0].close()

    def fake_server(self, reply):
        """A server that reads one upload (its header's size, or to EOF: a resumable client
        half-closes only after the OK) and answers `reply`. Its thread is joined before the test
        ends, and the test fails if it did not serve exactly one connection."""
        listener = self.listener()
        listener.settimeout(TIMEOUT)
        outcome = []

        def serve():
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(TIMEOUT)
                    data = b""
                    while True:
                        header, newline, body = data.partition(b"\n")
                        if newline and len(body) >= int(header.split()[1]):
                            break
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(reply)
                outcome.append("served")
            except OSError as error:
                outcome.append(error)

        thread = threading.Thread(target=serve)
        thread.start()

        def finish():
            thread.join(TIMEOUT + 1)
            self.assertFalse(thread.is_alive())
            self.assertEqual(outcome, ["served"])
            self.assertNoConnection(listener)

        self.addCleanup(finish)
        return listener.getsockname()[1]

    def run_client(self, port, data=b"hello"):
        with tempfile.NamedTemporaryFile() as f:
            f.write(data)
            f.flush()
            result = muxtest.run_mux("upload-client", "--port", str(port), "--file", f.name)
        return result.returncode, result.stderr.decode()

    def test_wrong_hash_is_a_verification_failure(self):
        port = self.fake_server(b"OK 5 00000000000000000000000000000000\n")
        code, err = self.run_client(port)
        self.assertEqual(code, 1)
        self.assertEqual(err, f"mux: error: verification failed: {muxtest.HOST}:{port} received 5 "
                              "bytes with XXH3-128 00000000000000000000000000000000, sent 5 bytes "
                              f"with XXH3-128 {muxtest.xxh128_of_bytes(b'hello')}\n")

    def test_wrong_count_is_a_verification_failure(self):
        port = self.fake_server(f"OK 4 {muxtest.xxh128_of_bytes(b'hello')}\n".encode())
        code, err = self.run_client(port)
        self.assertEqual(code, 1)
        self.assertTrue(err.startswith("mux: error: verification failed:"), err)

    def test_err_reply_and_no_reply(self):
        port = self.fake_server(b"ERR disk error: \x1b[31mNo space left on device\n")
        code, err = self.run_client(port)
        self.assertEqual((code, err), (1, f"mux: error: {muxtest.HOST}:{port} refused the upload: "
                                          "disk error: ?[31mNo space left on device\n"))
        port = self.fake_server(b"")
        code, err = self.run_client(port)
        self.assertEqual((code, err), (1, f"mux: error: {muxtest.HOST}:{port} closed the "
                                          "connection without a reply\n"))

    def test_missing_file_is_reported_before_connecting(self):
        listener = self.listener()
        port = listener.getsockname()[1]
        result = muxtest.run_mux("upload-client", "--port", str(port), "--file", "/nonexistent/f")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(), "mux: error: /nonexistent/f: No such file or directory\n")
        # A directory is sent as a tree (e2e-tree); one holding a name the server would refuse
        # fails before connecting too.
        tree = tempfile.mkdtemp(prefix="mux-upload-test-tree-")
        try:
            open(os.path.join(tree, "bad\x01name"), "w").close()
            result = muxtest.run_mux("upload-client", "--port", str(port), "--file", tree)
        finally:
            shutil.rmtree(tree)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(),
                         f"mux: error: {tree}/bad\x01name: this name cannot be sent (the server "
                         "refuses it: component 2 has a control character)\n")
        self.assertNoConnection(listener)

    def test_refused_connection(self):
        with socket.socket() as probe:
            probe.bind((muxtest.HOST, 0))
            port = probe.getsockname()[1]
        result = muxtest.run_mux("upload-client", "--port", str(port), "--file", "/etc/hostname")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(),
                         f"mux: error: connect to {muxtest.HOST}:{port}: Connection refused\n")


class OutputDirErrorTests(unittest.TestCase):
    def assertStartError(self, directory, why, preexec_fn=None):
        result = subprocess.run([muxtest.MUX, "upload-server", "--port", "0", "--output-dir", directory],
                                capture_output=True, timeout=TIMEOUT, preexec_fn=preexec_fn)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        self.assertEqual(result.stderr.decode(), f"mux: error: --output-dir {directory}: {why}\n")

    def test_missing_output_dir(self):
        self.assertStartError("/nonexistent/mux-out", "No such file or directory")

    def test_output_dir_that_is_a_file(self):
        self.assertStartError("/etc/hostname", "Not a directory")

    def test_unwritable_output_dir(self):
        with tempfile.TemporaryDirectory() as directory:
            if os.geteuid() == 0:
                # Root writes anywhere, so the server runs as nobody in a directory it may
                # enter and read but not write.
                os.chmod(directory, 0o755)
                def as_nobody():
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                self.assertStartError(directory, "Permission denied", preexec_fn=as_nobody)
            else:
                os.chmod(directory, 0o500)
                self.assertStartError(directory, "Permission denied")


class SingleLoopUploadTests(UploadTests, UploadTestBase):
    SERVE = "single"


class ForkUploadTests(UploadTests, UploadTestBase):
    SERVE = "fork"

    def test_no_zombies_after_many_uploads(self):
        server = self.server(output_dir=False)
        pid = server.proc.pid
        data = b"z" * 5000
        expected = f"OK 5000 {muxtest.xxh128_of_bytes(data)}\n"
        for _ in range(40):
            self.assertEqual(raw_exchange(server.port, data), expected)
        for _ in range(10):  # and some that end badly
            with server.connect() as sock:
                sock.sendall(b"MUXUP/1 100 x\nshort")
        for _ in range(5):
            path = self.make_file("f.bin", 1000)
            self.assertConfirmed(*self.upload_client(server, path), path, saved_as=None)
        self.wait_received(server, 45)
        server.wait_for_log(r"\[Client 50\] .*: incomplete")
        deadline = time.monotonic() + TIMEOUT
        while zombie_children(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(zombie_children(pid), [])


if __name__ == "__main__":
    muxtest.main()
