"""mux as a service: log levels (-q, default, -v, --log-level), UTC timestamps with their offset,
no timestamps when stdout is the journal (JOURNAL_STREAM), fork-mode lines of one client in
order, and SIGHUP: a reload that keeps serving, or a graceful shutdown once the terminal the
server ran in has gone away. Everything through the real binary."""

import datetime
import os
import pty
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import muxtest

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"
SERVERS = ["chat-server", "upload-server"]


def upload(port, data, name="f.bin"):
    with muxtest.connect(port) as sock:
        sock.sendall(f"MUXUP/1 {len(data)} {name}\n".encode() + data)
        sock.shutdown(socket.SHUT_WR)
        return muxtest.LineReader(sock).line()


class TimestampTest(unittest.TestCase):
    def test_every_line_starts_with_utc_and_its_offset(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                before = datetime.datetime.now(datetime.timezone.utc)
                with muxtest.Server(sub) as server:
                    match = server.wait_for_log(rf"^({TIMESTAMP}) listening on ")
                stamp = datetime.datetime.strptime(match.group(1).replace("+00:00", "+0000"),
                                                   "%Y-%m-%dT%H:%M:%S.%f%z")
                after = datetime.datetime.now(datetime.timezone.utc)
                self.assertLessEqual(before - datetime.timedelta(seconds=1), stamp)
                self.assertLessEqual(stamp, after + datetime.timedelta(seconds=1))
                for line in server.stdout_lines:
                    self.assertRegex(line, rf"^{TIMESTAMP} ")

    def test_utc_whatever_the_local_zone(self):
        env = dict(os.environ, TZ="Asia/Kolkata")
        with muxtest.Server("chat-server", env=env) as server:
            match = server.wait_for_log(rf"^({TIMESTAMP}) listening on ")
        hour = int(match.group(1)[11:13])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertIn(hour, {now.hour, (now.hour - 1) % 24})


class JournalTest(unittest.TestCase):
    """Under systemd, JOURNAL_STREAM=DEV:INODE names the journal's stream; journald stamps lines
    itself, so mux writes none, and marks each line's priority the way journald reads it."""

    def run_with_stdout_file(self, journal_stream_of_other_file):
        with tempfile.TemporaryFile() as log, tempfile.TemporaryFile() as other:
            named = other if journal_stream_of_other_file else log
            status = os.fstat(named.fileno())
            env = dict(os.environ, JOURNAL_STREAM=f"{status.st_dev}:{status.st_ino}")
            proc = subprocess.Popen([muxtest.MUX, "chat-server", "--port", "0", "-v"], stdout=log,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
            try:
                deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
                while True:
                    log.seek(0)
                    text = log.read().decode()
                    found = re.search(r"listening on \S+:(\d+)", text)
                    if found or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                self.assertIsNotNone(found, text)
                with muxtest.connect(int(found.group(1))) as sock:
                    muxtest.LineReader(sock).line()
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=muxtest.DEFAULT_TIMEOUT), 0)
            log.seek(0)
            return log.read().decode().splitlines()

    def test_no_timestamps_on_the_journal(self):
        lines = self.run_with_stdout_file(journal_stream_of_other_file=False)
        self.assertTrue(lines)
        self.assertRegex(lines[0], r"^<6>listening on 127\.0\.0\.1:\d+ \(serve single\)$")
        for line in lines:
            self.assertRegex(line, r"^<[3467]>")
            self.assertNotRegex(line, TIMESTAMP)

    def test_timestamps_when_the_journal_is_some_other_file(self):
        lines = self.run_with_stdout_file(journal_stream_of_other_file=True)
        for line in lines:
            self.assertRegex(line, rf"^{TIMESTAMP} ")


class LevelTest(unittest.TestCase):
    def lines_after_one_client(self, sub, *flags):
        with muxtest.Server(sub, *flags) as server:
            if sub == "chat-server":
                with server.connect() as sock:
                    reader = muxtest.LineReader(sock)
                    reader.line()
                    sock.sendall(b"/quit\n")
                    reader.expect_eof()
            else:
                self.assertTrue(upload(server.port, b"x" * 10).startswith("OK 10 "))
            server.stop()
        return server.stdout_lines

    def test_quiet_still_prints_the_listening_line(self):
        for sub in SERVERS:
            for flags in [["-q"], ["--log-level", "error"], ["--log-level=warning"]]:
                with self.subTest(subcommand=sub, flags=flags):
                    lines = self.lines_after_one_client(sub, *flags)
                    self.assertEqual(len(lines), 1, lines)
                    self.assertRegex(lines[0], rf"^{TIMESTAMP} listening on 127\.0\.0\.1:\d+ ")

    def test_debug_is_verbose(self):
        for sub in SERVERS:
            with self.subTest(subcommand=sub):
                default = self.lines_after_one_client(sub)
                verbose = self.lines_after_one_client(sub, "-v")
                debug = self.lines_after_one_client(sub, "--log-level", "debug")
                info = self.lines_after_one_client(sub, "--log-level", "info")
                self.assertGreater(len(verbose), len(default))
                self.assertEqual(len(debug), len(verbose))
                self.assertEqual(len(info), len(default))

    def test_log_level_excludes_verbose_and_quiet(self):
        result = muxtest.run_mux("chat-server", "--log-level", "debug", "-q")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.decode().splitlines()[0],
                         "mux: error: --log-level and --quiet cannot be used together")
        result = muxtest.run_mux("chat-server", "--log-level", "loud")
        self.assertEqual(result.stderr.decode().splitlines()[0],
                         "mux: error: --log-level: 'loud' is not a log level (error, warning, info or debug)")


class ForkOrderTest(unittest.TestCase):
    def test_one_clients_lines_stay_in_order(self):
        """The parent's `connected` line comes before the child's own lines about that client."""
        with tempfile.TemporaryDirectory() as out:
            with muxtest.Server("upload-server", "--serve", "fork", "-v", "--output-dir", out) as server:
                for index in range(20):
                    self.assertTrue(upload(server.port, b"y" * 100, f"f{index}").startswith("OK 100 "))
                server.wait_for_log(r"Saved \[Client 20\]")
                server.stop()
        for number in range(1, 21):
            mine = [line for line in server.stdout_lines if f"[Client {number}]" in line]
            self.assertRegex(mine[0], rf"\[Client {number}\] \S+ connected$", mine)
            self.assertRegex(mine[1], rf"\[Client {number}\] served by process \d+$", mine)
            self.assertTrue(any("Saved" in line for line in mine[2:]), mine)


class HangupTest(unittest.TestCase):
    def test_sighup_reloads_and_keeps_serving(self):
        for sub in SERVERS:
            for mode in ["single", "fork"]:
                with self.subTest(subcommand=sub, serve=mode):
                    with muxtest.Server(sub, "--serve", mode, preexec_fn=os.setsid) as server:
                        client = None
                        if sub == "chat-server":
                            client = server.connect()
                            reader = muxtest.LineReader(client)
                            reader.line()
                        # The whole process group, as a closing terminal would signal it.
                        os.killpg(server.proc.pid, signal.SIGHUP)
                        server.wait_for_log(r"SIGHUP: nothing to reload; still serving$")
                        if client is not None:
                            with server.connect() as other:
                                muxtest.LineReader(other).line()
                                client.sendall(b"still here\n")
                                self.assertTrue(muxtest.LineReader(other).line().endswith(": still here"))
                            client.close()
                        else:
                            self.assertTrue(upload(server.port, b"z" * 5).startswith("OK 5 "))
                        self.assertIsNone(server.proc.poll())
                        self.assertEqual(server.stop(), 0)

    def test_sighup_reloads_the_tls_certificate_in_both_serve_modes(self):
        """The TLS certificate is a reload hook of the SIGHUP handler: a bad key is logged as an
        error and the old certificate kept (the server never dies of it), a good pair is served
        to the next connection. Both servers, both serve modes."""
        import shutil
        import test_tls
        pki = test_tls.Pki()
        test_tls.PKI = pki
        self.addCleanup(shutil.rmtree, pki.dir, True)
        for sub in SERVERS:
            for mode in ["single", "fork"]:
                with self.subTest(subcommand=sub, serve=mode):
                    cert, key = pki.path(f"live-{sub}-{mode}.pem"), pki.path(f"live-{sub}-{mode}.key")
                    shutil.copy(pki.path("server.pem"), cert)
                    shutil.copy(pki.path("server.key"), key)
                    with muxtest.Server(sub, "--serve", mode, "--tls-cert", cert, "--tls-key",
                                        key) as server:
                        first = test_tls.tls_connect(server.port)
                        self.assertEqual(test_tls.peer_fingerprint(first), pki.fingerprint("server"))
                        first.close()
                        shutil.copy(pki.path("server2.key"), key)  # no longer matches
                        server.signal(signal.SIGHUP)
                        server.wait_for_log(r"error: SIGHUP: could not reload the TLS certificate: "
                                            r".*; still using the old one$")
                        with test_tls.tls_connect(server.port) as sock:
                            self.assertEqual(test_tls.peer_fingerprint(sock),
                                             pki.fingerprint("server"))
                        shutil.copy(pki.path("server2.pem"), cert)
                        server.signal(signal.SIGHUP)
                        server.wait_for_log(r"SIGHUP: reloaded the TLS certificate: CN=localhost")
                        with test_tls.tls_connect(server.port) as sock:
                            self.assertEqual(test_tls.peer_fingerprint(sock),
                                             pki.fingerprint("server2"))
                        self.assertIsNone(server.proc.poll())
                        self.assertEqual(server.stop(), 0)

    def test_terminal_hangup_shuts_down_gracefully(self):
        """The server is a session leader on a pseudo-terminal; closing the terminal's master
        side hangs it up: the server tells its clients and exits 0, not 129."""
        for mode in ["single", "fork"]:
            with self.subTest(serve=mode):
                pid, master = pty.fork()
                if pid == 0:
                    os.execv(muxtest.MUX, [muxtest.MUX, "chat-server", "--port", "0", "--serve", mode])
                text = b""
                deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
                while b"listening on" not in text or not text.endswith(b"\n"):
                    ready, _, _ = select.select([master], [], [], max(0, deadline - time.monotonic()))
                    self.assertTrue(ready, text)
                    text += os.read(master, 4096)
                port = int(re.search(rb"listening on \S+:(\d+)", text).group(1))
                with muxtest.connect(port) as sock:
                    reader = muxtest.LineReader(sock)
                    reader.line()
                    os.close(master)
                    self.assertEqual(reader.line(), "* server shutting down")
                    reader.expect_eof()
                _, status = os.waitpid(pid, 0)
                self.assertTrue(os.WIFEXITED(status), f"ended by signal {os.WTERMSIG(status)}")
                self.assertEqual(os.WEXITSTATUS(status), 0)


if __name__ == "__main__":
    muxtest.main()
