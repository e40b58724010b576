"""Directories and many files (issue 27): --file given more than once or naming a directory sends
the tree over one connection, pipelined (MUXUP/1 batch=1), with relative paths kept under
--output-dir, empty directories made, symlinks not followed, hostile paths refused by the
server, and a kill -9 mid-directory continued by the same command. The real binary on
loopback; trees compared byte for byte."""

import filecmp
import os
import random
import re
import select
import signal
import socket
import subprocess
import time

import muxtest
import test_tls

MIB = 1 << 20
TIMEOUT = muxtest.DEFAULT_TIMEOUT
EMPTY_HASH = "99aa06d3014798d86001c324468d497f"  # XXH3-128 of nothing


def read_until(case, stream, pattern, timeout=3 * muxtest.DEFAULT_TIMEOUT):
    """Reads a running client's output until `pattern` shows up; returns what was read."""
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen.decode(errors="replace")):
        remaining = deadline - time.monotonic()
        case.assertGreater(remaining, 0, f"no {pattern!r} within {timeout} s: {seen!r}")
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            case.assertTrue(chunk, f"output ended before {pattern!r}: {seen!r}")
            seen += chunk
    return seen.decode(errors="replace")


def children_of(pid):
    """The pids of `pid`'s children (a fork-mode server's connection children)."""
    pids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            pids += [int(child) for child in f.read().split()]
    return pids


def setUpModule():
    test_tls.setUpModule()


def tearDownModule():
    test_tls.tearDownModule()


class TreeCase(muxtest.UploadCase):
    TLS = False
    SYNC = "none"
    TOKEN = False

    def setUp(self):
        super().setUp()
        self.state = os.path.join(self.work, "state")
        self.src = os.path.join(self.work, "src")
        os.mkdir(self.src)
        self.token_file = os.path.join(self.work, "tokens")
        with open(os.open(self.token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("s3cret-token-0123456789\n")

    def start_server(self, *extra):
        flags = ["--output-dir", self.out, "--sync", self.SYNC]
        if self.TLS:
            flags += test_tls.PKI.server_flags()
        if self.TOKEN:
            flags += ["--token-file", self.token_file]
        return self.upload_server(*flags, *extra)

    def client_args(self, server, paths, *args):
        host = ["--host", "localhost", "--tls-ca", test_tls.PKI.ca] if self.TLS else []
        token = ["--token-file", self.token_file] if self.TOKEN else []
        files = [arg for path in paths for arg in ("--file", path)]
        return [muxtest.MUX, "upload-client", "--port", str(server.port), *host, *token, *files,
                *args]

    def env(self):
        env = dict(os.environ)
        env["XDG_STATE_HOME"] = self.state
        return env

    def run_client(self, server, *paths, args=()):
        result = subprocess.run(self.client_args(server, paths, *args), capture_output=True,
                                timeout=120, env=self.env())
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def write(self, relative, data):
        path = os.path.join(self.src, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def make_tree(self):
        """tree/ with nested directories, an empty one, an empty file and files of 1-64 KiB."""
        rng = random.Random(27)
        for relative in ["a.txt", "sub/b.bin", "sub/deep/c.bin", "sub/deep/deeper/d", ".hidden",
                         "name with spaces", "ünïcode-名前"]:
            self.write(os.path.join("tree", relative), os.urandom(rng.randint(1, 64) * 1024))
        self.write("tree/sub/empty-file", b"")
        os.makedirs(os.path.join(self.src, "tree", "empty", "nested-empty"))
        return os.path.join(self.src, "tree")

    def assert_same_tree(self, left, right):
        """Every directory, file name and byte the same (filecmp with shallow=False)."""
        compared = filecmp.dircmp(left, right)

        def check(cmp):
            self.assertEqual((cmp.left_only, cmp.right_only, cmp.funny_files), ([], [], []),
                             f"{cmp.left} vs {cmp.right}")
            _, mismatch, errors = filecmp.cmpfiles(cmp.left, cmp.right, cmp.common_files,
                                                   shallow=False)
            self.assertEqual((mismatch, errors), ([], []), cmp.left)
            for sub in cmp.subdirs.values():
                check(sub)
        check(compared)

    def raw_batch(self, server, payload):
        """Sends `payload` at once on a raw connection (no TLS cases here), half-closes, and
        returns every reply line."""
        with socket.create_connection((muxtest.HOST, server.port), timeout=TIMEOUT) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply.decode().splitlines()


class TreeTests(TreeCase):
    def test_a_tree_arrives_byte_identical_with_empty_directories(self):
        server = self.start_server("-v")
        tree = self.make_tree()
        code, out, err = self.run_client(server, tree)
        self.assertEqual((code, err), (0, ""), out)
        self.assertRegex(out, r"^Sent 8 files \(.*\) in .*, each verified$")
        self.assert_same_tree(tree, os.path.join(self.out, "tree"))
        self.assertTrue(os.path.isdir(os.path.join(self.out, "tree", "empty", "nested-empty")))
        # Nothing hidden is left behind: every file was named.
        self.assertEqual([n for n in self.saved() if n.startswith(".")], [])
        # One connection for the whole tree.
        self.assertEqual(server.log_count(r"\] \S+ connected$"), 1, server.stdout_lines)

    def test_repeated_file_flags_go_over_one_connection(self):
        server = self.start_server()
        first = self.write("one.bin", os.urandom(3000))
        second = self.write("two/two.bin", os.urandom(5000))
        code, out, err = self.run_client(server, first, second, os.path.join(self.src, "two"))
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("Sent 3 files", out)
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "one.bin")), muxtest.xxh128(first))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "two.bin")), muxtest.xxh128(second))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "two", "two.bin")),
                         muxtest.xxh128(second))

    def test_a_symlink_out_of_the_tree_is_skipped_with_a_warning(self):
        server = self.start_server()
        secret = self.write("outside/secret.txt", b"not for the server\n")
        tree = os.path.join(self.src, "tree")
        self.write("tree/kept.txt", b"kept\n")
        os.symlink(secret, os.path.join(tree, "link-to-secret"))
        os.symlink(os.path.dirname(secret), os.path.join(tree, "link-to-dir"))
        code, out, err = self.run_client(server, tree)
        self.assertEqual(code, 0, err)
        self.assertIn("mux: warning: ", err)
        self.assertIn("link-to-secret: a symbolic link, not followed: skipped", err)
        self.assertIn("link-to-dir: a symbolic link, not followed: skipped", err)
        self.assertEqual(sorted(os.listdir(os.path.join(self.out, "tree"))), ["kept.txt"])

    def test_a_name_the_server_would_refuse_fails_before_connecting(self):
        server = self.start_server("-v")
        self.write("tree/bad\nname", b"x")
        code, out, err = self.run_client(server, os.path.join(self.src, "tree"))
        self.assertEqual(code, 1, out)
        self.assertIn("this name cannot be sent", err)
        self.assertIn("component 2 has a control character", err)
        self.assertEqual(server.log_count(r"connected"), 0, server.stdout_lines)

    def test_hostile_paths_are_refused_by_the_server(self):
        server = self.start_server()
        cases = [
            ("..%2Fescape", "component 1 is .."),
            ("a%2F..%2F..%2Fescape", "component 2 is .."),
            ("%2Fetc%2Fescape", "an absolute path"),
            ("a%0Ab", "component 1 has a control character"),
            ("a%2F%2Fb", "component 2 is empty"),
            ("a%2F", "component 2 is empty"),
            ("x" * 201, "component 1 is longer than 200 bytes"),
            ("%2F".join(["d" * 100] * 11), "longer than 1024 bytes"),
            (".mux-upload-1-1.part", "component 1 is named like the server's temporary files"),
        ]
        for encoded, why in cases:
            with self.subTest(path=encoded):
                # A good member first: the refusal comes after its OK, on the same connection.
                lines = self.raw_batch(server, b"MUXUP/1 2 fine batch=1\nokMUXUP/1 3 " +
                                       encoded.encode() + b" batch=1\nbad")
                self.assertEqual(len(lines), 2, lines)
                self.assertRegex(lines[0], r"^OK 2 [0-9a-f]{32}$")
                self.assertEqual(lines[1], f"ERR bad path: {why}")
        self.assertEqual(sorted(os.listdir(self.out)),
                         ["fine"] + [f"fine.{n}" for n in range(1, len(cases))])
        self.assertFalse(os.path.exists(os.path.join(self.work, "escape")))

    def test_pipelined_headers_get_one_reply_each_in_order(self):
        server = self.start_server()
        payload = (b"MUXUP/1 0 d batch=1 dir=1 reply-name=1\n"
                   b"MUXUP/1 5 d%2Fa.txt batch=1 reply-name=1\nhello"
                   b"MUXUP/1 3 d%2Fe%2Fb batch=1 reply-name=1\nabc"
                   b"MUXUP/1 0 empty batch=1 dir=1\n")
        lines = self.raw_batch(server, payload)
        self.assertEqual(lines, [
            f"OK 0 {EMPTY_HASH} name=d",
            f"OK 5 {muxtest.xxh128_of_bytes(b'hello')} name=d%2Fa.txt",
            f"OK 3 {muxtest.xxh128_of_bytes(b'abc')} name=d%2Fe%2Fb",
            f"OK 0 {EMPTY_HASH}",
        ])
        self.assertEqual(self.read_saved("d/a.txt"), b"hello")
        self.assertEqual(self.read_saved("d/e/b"), b"abc")
        self.assertTrue(os.path.isdir(os.path.join(self.out, "empty")))

    def test_a_batch_does_not_follow_a_symlink_planted_in_the_output_directory(self):
        server = self.start_server()
        os.symlink(self.work, os.path.join(self.out, "planted"))
        lines = self.raw_batch(server, b"MUXUP/1 1 planted%2Fx batch=1\nx")
        self.assertEqual(lines, ["ERR disk error: Not a directory"])
        self.assertFalse(os.path.exists(os.path.join(self.work, "x")))

    def test_raw_and_single_uploads_are_unchanged(self):
        server = self.start_server()
        lines = self.raw_batch(server, b"just bytes, no header")
        self.assertEqual(lines, [f"OK 21 {muxtest.xxh128_of_bytes(b'just bytes, no header')}"])
        lines = self.raw_batch(server, b"MUXUP/1 3 dir%2Fname\nabcMUXUP/1 1 x batch=1\ny")
        # Without batch=1 a name keeps only its last component and the connection ends.
        self.assertEqual(lines, [f"OK 3 {muxtest.xxh128_of_bytes(b'abc')}"])
        self.assertEqual(self.read_saved("name"), b"abc")

    def test_killed_mid_directory_the_same_command_resumes(self):
        server = self.start_server()
        tree = os.path.join(self.src, "tree")
        self.write("tree/a-small", os.urandom(40_000))
        self.write("tree/b-small", os.urandom(50_000))
        big = self.write("tree/c-big.bin", os.urandom(12 * MIB))
        self.write("tree/d-after", os.urandom(30_000))
        client = subprocess.Popen(self.client_args(server, [tree], "--limit-rate", "3M"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        try:
            self.wait_for_checkpoint(2 * MIB)
            # With --sync full the small files' OKs wait for a group sync, which a loaded disk
            # can hold past the big file's checkpoint: the client must have them (its journal's
            # D lines) before the kill, or the next run rightly sends them again.
            self.wait_for_journal(confirmed=2)
            time.sleep(random.uniform(0, 0.2))
            logged = len(server.stdout_lines)
        finally:
            client.kill()
            client.communicate(timeout=TIMEOUT)
        server.wait_for_log(r"incomplete", start=logged)
        # The last checkpoint is written after that line (--sync full: on the helper thread, in
        # fork mode before the child exits); until then the partial is locked: ERR busy.
        muxtest.wait_until_unlocked(self.out, 3 * TIMEOUT)
        # The small files before it were confirmed; the big one is a partial, d-after not sent.
        self.assertEqual(sorted(os.listdir(os.path.join(self.out, "tree"))),
                         ["a-small", "b-small"])
        code, out, err = self.run_client(server, tree)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("2 of 4 files were confirmed by an earlier run: not sent again", out)
        match = re.search(r"^Resumed tree/c-big.bin at (\S+) MiB of 12.0 MiB$", out, re.M)
        self.assertIsNotNone(match, out)
        self.assertGreaterEqual(float(match.group(1)), 2.0)
        summary = re.search(r"^Sent 2 files \((\S+) MiB\) in .*, each verified, 2 already there "
                            r"from an earlier run$", out, re.M)
        self.assertIsNotNone(summary, out)
        self.assertLess(float(summary.group(1)), 10.1)  # only the rest of the big file went
        self.assert_same_tree(tree, os.path.join(self.out, "tree"))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "tree", "c-big.bin")),
                         muxtest.xxh128(big))
        self.assertEqual([n for n in os.listdir(self.out) if n.startswith(".")], [])

    def test_killed_while_replies_are_unread_the_same_command_saves_nothing_twice(self):
        """Files the server saved whose OK the client never read (the pipeline: thousands may be
        in flight) are not saved again as name.1 by the next run: the batch's completion log."""
        server = self.start_server("-v")  # the end of a connection between two files is a detail
        tree = os.path.join(self.src, "tree")
        for n in range(1500):
            self.write(f"tree/s{n:04d}", os.urandom(random.randint(1, 8) * 1024))
        self.write("tree/t-big.bin", os.urandom(3 * MIB))
        client = subprocess.Popen(self.client_args(server, [tree]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=self.env())
        try:
            saved = os.path.join(self.out, "tree")
            deadline = time.monotonic() + 6 * TIMEOUT
            while not (os.path.isdir(saved) and len(os.listdir(saved)) >= 20):
                self.assertLess(time.monotonic(), deadline, "no 20 files saved")
                self.assertIsNone(client.poll(), "the client ended before it could be stopped")
                time.sleep(0.005)
            # Stopped, the client reads no more replies; the server goes on with what is in the
            # sockets' buffers, so it holds files the client's journal does not confirm.
            client.send_signal(signal.SIGSTOP)
            confirmed = self.journal_lines("D ")
            deadline = time.monotonic() + 6 * TIMEOUT
            while len(os.listdir(saved)) <= len(confirmed):
                self.assertLess(time.monotonic(), deadline, "no file saved past the journal")
                time.sleep(0.02)
        finally:
            client.kill()
            client.communicate(timeout=TIMEOUT)
        # The next run only once the server is done with this connection's buffered files (a
        # fork-mode child goes on after the kill): what it saves after the next run read the log
        # would be saved again.
        server.wait_for_log(r"\[Client 1\] \S+ (in .* s: incomplete|closed without sending|"
                            r"sent \d+ file)", timeout=3 * TIMEOUT)
        code, out, err = self.run_client(server, tree)
        self.assertEqual((code, err), (0, ""), out)
        server.wait_for_log(r"tree/s\d{4} was saved already \(\d+ bytes\): nothing sent again")
        self.assert_same_tree(tree, saved)  # no s0042.1
        self.assertEqual([n for n in os.listdir(self.out) if n.startswith(".")], [])

    def test_a_rerun_while_an_earlier_connection_holds_the_batch_waits_for_it(self):
        """ERR busy for a batch: an earlier connection of the same batch (its batch-key) is still
        being saved (a killed run's connection whose buffered files the single loop, or a
        fork-mode child, still works through; here one held open by hand with the client's
        key). The same command run now, without --retry, waits for it instead of reading the
        batch's completion log before that connection is done with it, then goes on."""
        server = self.start_server()
        tree = os.path.join(self.src, "tree")
        self.write("tree/a-small", os.urandom(40_000))
        self.write("tree/c-big.bin", os.urandom(6 * MIB))
        self.write("tree/d-after", os.urandom(30_000))
        client = subprocess.Popen(self.client_args(server, [tree], "--limit-rate", "3M"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        try:
            self.wait_for_checkpoint(MIB)
            self.wait_for_journal(confirmed=1)
            logged = len(server.stdout_lines)
        finally:
            client.kill()
            client.communicate(timeout=TIMEOUT)
        server.wait_for_log(r"incomplete", start=logged)
        muxtest.wait_until_unlocked(self.out, 3 * TIMEOUT)
        directory = os.path.join(self.state, "mux")
        keys = [name for name in os.listdir(directory) if not name.endswith(".files")]
        self.assertEqual(len(keys), 1, keys)
        with open(os.path.join(directory, keys[0])) as f:
            key = f.read().strip()
        holder = muxtest.connect(server.port)
        rerun = None
        try:
            holder.sendall(f"MUXUP/1 5 tree/held batch=1 batch-key={key} confirm=1\nab".encode())
            rerun = subprocess.Popen(self.client_args(server, [tree]), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env())
            seen = read_until(self, rerun.stdout, r"waiting for it to end: try 1 of 6 in 1 s\n")
            holder.close()  # the earlier connection ends, its member incomplete
            out, err = rerun.communicate(timeout=6 * TIMEOUT)
        finally:
            holder.close()
            if rerun is not None and rerun.poll() is None:
                rerun.kill()
                rerun.communicate()
        out = seen + out.decode()
        self.assertEqual((rerun.returncode, err.decode()), (0, ""), out)
        self.assertRegex(out, rf"(?m)^{muxtest.HOST}:{server.port} refused tree/c-big.bin: busy: "
                              r"this batch is in progress on another connection; waiting for it "
                              r"to end: try 1 of 6 in 1 s$")
        self.assertIn("1 of 3 files were confirmed by an earlier run: not sent again", out)
        self.assertRegex(out, r"(?m)^Resumed tree/c-big.bin at ")
        self.assert_same_tree(tree, os.path.join(self.out, "tree"))
        self.assertEqual([n for n in os.listdir(self.out) if n.startswith(".")], [])
        self.assertEqual(os.listdir(directory), [])  # journal and key gone

    def journal_lines(self, kind):
        directory = os.path.join(self.state, "mux")
        lines = []
        for name in os.listdir(directory) if os.path.isdir(directory) else []:
            if name.endswith(".files"):
                with open(os.path.join(directory, name)) as f:
                    lines += [line for line in f if line.startswith(kind)]
        return lines

    def test_retry_continues_the_batch_after_the_server_is_killed(self):
        server = self.start_server()
        tree = os.path.join(self.src, "tree")
        self.write("tree/a-small", os.urandom(40_000))
        self.write("tree/b-small", os.urandom(50_000))
        big = self.write("tree/c-big.bin", os.urandom(10 * MIB))
        self.write("tree/d-after", os.urandom(30_000))
        self.write("tree/e-last", os.urandom(20_000))
        client = subprocess.Popen(self.client_args(server, [tree], "--limit-rate", "4M",
                                                   "--retry", "10"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        try:
            # A random point of the big file, once the small ones before it are confirmed (an OK
            # lost with the server would make the next try send that file again).
            self.wait_for_checkpoint(MIB)
            self.wait_for_journal(confirmed=2)
            time.sleep(random.uniform(0, 0.5))
            self.kill_server(server)
            # The same port; the client is already waiting to connect again (1 s, 2 s, ...).
            restarted = self.start_server("--port", str(server.port), "-v")
            out, err = client.communicate(timeout=6 * TIMEOUT)
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        out, err = out.decode(), err.decode()
        self.assertEqual((client.returncode, err), (0, ""), out)
        # Why depends on where the kill met the client (reset, EOF, a TLS error): it is named.
        self.assertRegex(out, rf"(?m)^[^\n]*{server.port}[^\n]*; retry 1 of 10 in 1 s$")
        self.assertNotIn("confirmed by an earlier run", out)  # they were this run's
        match = re.search(r"^Resumed tree/c-big.bin at (\S+) MiB of 10.0 MiB$", out, re.M)
        self.assertIsNotNone(match, out)
        self.assertGreaterEqual(float(match.group(1)), 1.0)
        self.assertRegex(out, r"(?m)^Sent 5 files \(.*\) in .*, each verified$")
        # The restarted server got only the rest: the big file from its checkpoint and the two
        # small files after it, never a or b again (no a-small.1).
        # (The log is written on its own thread: waited for, not counted at once; it keeps the
        # server's order, so a or b would have come before e-last.)
        restarted.wait_for_log(r"resumed at \d+ of 10485760 bytes")
        restarted.wait_for_log(r"saved a file .*tree/d-after$")
        restarted.wait_for_log(r"saved a file .*tree/e-last$")
        self.assertEqual(restarted.log_count(r"a-small|b-small"), 0, restarted.stdout_lines)
        self.assert_same_tree(tree, os.path.join(self.out, "tree"))
        self.assertEqual(muxtest.xxh128(os.path.join(self.out, "tree", "c-big.bin")),
                         muxtest.xxh128(big))
        self.assertEqual([n for n in os.listdir(self.out) if n.startswith(".")], [])
        self.assertEqual(os.listdir(os.path.join(self.state, "mux")), [])  # journal and key gone

    def test_ctrl_c_while_a_batch_waits_to_reconnect_ends_at_once_with_130(self):
        server = self.start_server()
        tree = os.path.join(self.src, "tree")
        self.write("tree/a-small", os.urandom(40_000))
        self.write("tree/c-big.bin", os.urandom(10 * MIB))
        client = subprocess.Popen(self.client_args(server, [tree], "--limit-rate", "4M",
                                                   "--retry", "4"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env())
        try:
            self.wait_for_checkpoint(MIB)
            self.wait_for_journal(confirmed=1)
            self.kill_server(server)  # never restarted: connects are refused
            # The third wait is 4 s: ending at once stays far from it, even under ASan at load
            # (1.5 s of a 2 s wait was too close: c738992).
            seen = read_until(self, client.stdout, r"retry 3 of 4 in 4 s\n")
            interrupted = time.monotonic()
            client.send_signal(signal.SIGINT)
            out, err = client.communicate(timeout=TIMEOUT)
            waited = time.monotonic() - interrupted
        finally:
            if client.poll() is None:
                client.kill()
                client.communicate()
        self.assertRegex(seen, r"Connection refused; retry 2 of 4 in 2 s\n.*Connection refused; "
                               r"retry 3 of 4 in 4 s\n")
        self.assertEqual(client.returncode, 130, err)
        self.assertLess(waited, 3)  # not the rest of the 4 s wait
        self.assertEqual(err.decode(), f"mux: error: interrupted by SIGINT while waiting to connect "
                                       f"to {self.host()}:{server.port}; 1 of 2 files confirmed; "
                                       f"run the same command again to resume\n")

    def host(self):
        return "localhost" if self.TLS else muxtest.HOST

    def wait_for_checkpoint(self, at_least):
        if muxtest.wait_for_checkpoint(self.out, at_least, 3 * TIMEOUT) is None:
            self.fail(f"no checkpoint of {at_least} bytes within {3 * TIMEOUT} s")

    def wait_for_journal(self, confirmed):
        """Waits until the client's batch journal (beside its upload key) holds `confirmed` D
        lines: files whose OK it read."""
        directory = os.path.join(self.state, "mux")
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:
            lines = []
            for name in os.listdir(directory) if os.path.isdir(directory) else []:
                if name.endswith(".files"):
                    with open(os.path.join(directory, name)) as f:
                        lines += [line for line in f if line.startswith("D ")]
            if len(lines) >= confirmed:
                return
            self.assertLess(time.monotonic(), deadline, f"{len(lines)} files confirmed")
            time.sleep(0.02)


class ForkTlsTokenFullSyncTreeTests(TreeCase):
    """Fork mode, TLS, tokens and --sync full (replies wait for one syncfs per group)."""
    SERVE = "fork"
    TLS = True
    TOKEN = True
    SYNC = "full"

    def test_a_tree_arrives_byte_identical(self):
        server = self.start_server()
        tree = self.make_tree()
        for n in range(200):
            self.write(f"tree/many/{n:03d}", os.urandom(random.randint(1, 4096)))
        code, out, err = self.run_client(server, tree)
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn("Sent 208 files", out)
        self.assert_same_tree(tree, os.path.join(self.out, "tree"))

    def test_killed_mid_directory_the_same_command_resumes(self):
        TreeTests.test_killed_mid_directory_the_same_command_resumes(self)

    def test_killed_while_replies_are_unread_the_same_command_saves_nothing_twice(self):
        TreeTests.test_killed_while_replies_are_unread_the_same_command_saves_nothing_twice(self)

    def test_a_rerun_while_the_killed_runs_child_still_saves_waits_and_saves_nothing_twice(self):
        """The same command run at once after a kill -9, while the fork-mode child of the killed
        run still saves the files in its socket buffer (here: stopped meanwhile, as a child the
        scheduler leaves behind on a loaded machine): the rerun reads ERR busy and waits for
        that child, instead of reading the batch's completion log before the child is done with
        it and saving those files a second time (as name.1)."""
        server = self.start_server()
        tree = os.path.join(self.src, "tree")
        for n in range(1500):
            self.write(f"tree/s{n:04d}", os.urandom(random.randint(1, 8) * 1024))
        client = subprocess.Popen(self.client_args(server, [tree]), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=self.env())
        saved = os.path.join(self.out, "tree")
        child = None
        rerun = None
        try:
            deadline = time.monotonic() + 6 * TIMEOUT
            while not (os.path.isdir(saved) and len(os.listdir(saved)) >= 20):
                self.assertLess(time.monotonic(), deadline, "no 20 files saved")
                self.assertIsNone(client.poll(), "the client ended before it could be stopped")
                time.sleep(0.005)
            # The client stops reading replies; the child goes on with what is buffered. Then
            # the child is held too, with files still to save, and the client killed.
            client.send_signal(signal.SIGSTOP)
            deadline = time.monotonic() + 6 * TIMEOUT
            while len(os.listdir(saved)) <= len(self.journal_lines("D ")):
                self.assertLess(time.monotonic(), deadline, "no file saved past the journal")
                time.sleep(0.02)
            children = children_of(server.proc.pid)
            self.assertEqual(len(children), 1, children)
            child = children[0]
            os.kill(child, signal.SIGSTOP)
            client.kill()
            client.communicate(timeout=TIMEOUT)
            rerun = subprocess.Popen(self.client_args(server, [tree]), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=self.env())
            # Either the rerun waits for the held child (ERR busy), or (as before the batch's
            # log was locked) it goes on without it and ends first.
            seen = b""
            deadline = time.monotonic() + 6 * TIMEOUT
            while b"waiting for it to end" not in seen and rerun.poll() is None:
                self.assertLess(time.monotonic(), deadline, f"the rerun neither waited nor ended: "
                                                            f"{seen!r}")
                ready, _, _ = select.select([rerun.stdout], [], [], 0.1)
                if ready:
                    seen += os.read(rerun.stdout.fileno(), 65536)
            os.kill(child, signal.SIGCONT)
            child = None
            out, err = rerun.communicate(timeout=6 * TIMEOUT)
            out = seen.decode(errors="replace") + out.decode(errors="replace")
        finally:
            if child is not None:
                os.kill(child, signal.SIGCONT)
            for proc in (client, rerun):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        self.assertEqual((rerun.returncode, err.decode()), (0, ""), out)
        # The held child's end (it finds its client gone), then nothing of the batch is pending.
        server.wait_for_log(r"\[Client 1\] \S+ (in .* s: incomplete|closed without sending|"
                            r"sent \d+ file)", timeout=3 * TIMEOUT)
        self.assert_same_tree(tree, saved)  # no s0042.1
        self.assertEqual([n for n in os.listdir(self.out) if n.startswith(".")], [])
        self.assertRegex(out, rf"(?m)^{self.host()}:{server.port} refused tree/s\d{{4}}: busy: this "
                              r"batch is in progress on another connection; waiting for it to "
                              r"end: try 1 of 6 in 1 s$")

    journal_lines = TreeTests.journal_lines
    wait_for_checkpoint = TreeTests.wait_for_checkpoint
    wait_for_journal = TreeTests.wait_for_journal
    host = TreeTests.host

    def test_retry_continues_the_batch_after_the_server_is_killed(self):
        TreeTests.test_retry_continues_the_batch_after_the_server_is_killed(self)


if __name__ == "__main__":
    muxtest.main()
