"""End-to-end tests of `mux chat-client`: piped and on a pseudo-terminal, against the real
chat-server, a hand-rolled hostile server, and `ncat -l -k --chat`."""

import contextlib
import os
import pty
import re
import select
import shutil
import socket
import subprocess
import threading
import time
import unittest

import muxtest
from muxtest import LineReader, Server

TIMEOUT = muxtest.DEFAULT_TIMEOUT


def start_client(port, *args, stdin=subprocess.PIPE):
    return subprocess.Popen([muxtest.MUX, "chat-client", "--port", str(port), *args],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish_client(client):
    """Kills `client` if it still runs and closes its pipes (a test cleanup)."""
    if client.poll() is None:
        client.kill()
        client.wait()
    for stream in (client.stdin, client.stdout, client.stderr):
        if stream and not stream.closed:
            stream.close()


class PipeReader:
    """Reads a child's stdout pipe with deadlines (a bare readline() can hang the suite)."""

    def __init__(self, stream):
        self.fd = stream.fileno()
        self.data = b""

    def until(self, needle, timeout=TIMEOUT):
        """Reads until `needle` has arrived; returns everything read so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} not written within {timeout}s; got {self.data!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"pipe closed before {needle!r}; got {self.data!r}")
                self.data += chunk
        return self.data

    def line(self, timeout=TIMEOUT):
        self.until(b"\n", timeout)
        line, _, self.data = self.data.partition(b"\n")
        return line + b"\n"

    def rest(self, timeout=TIMEOUT):
        """Everything until EOF."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"pipe not closed within {timeout}s; got {self.data!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    data, self.data = self.data, b""
                    return data
                self.data += chunk


class Peer:
    """A raw socket in the room, to see what the client under test sends."""

    def __init__(self, server):
        self.sock = server.connect()
        self.reader = LineReader(self.sock)
        self.name = re.match(r"\* welcome, you are (.+) \(", self.reader.line()).group(1)

    def close(self):
        self.sock.close()


def free_port():
    with socket.socket() as probe:
        probe.bind((muxtest.HOST, 0))
        return probe.getsockname()[1]


class AgainstMuxServer(unittest.TestCase):
    def setUp(self):
        # Whole files are piped through the client here: the per-client rates are not the subject.
        self.server = Server("chat-server", *muxtest.CHAT_UNLIMITED)
        self.addCleanup(self.assert_clean_exit)
        self.peer = Peer(self.server)
        self.addCleanup(self.peer.close)

    def assert_clean_exit(self):
        self.assertEqual(self.server.stop(), 0)
        self.assertEqual(self.server.stderr_lines, [])

    def run_piped(self, data, *args):
        client = start_client(self.server.port, *args)
        out, err = client.communicate(data, timeout=TIMEOUT)
        return client.returncode, out, err

    def test_piped_lines_are_delivered_and_the_client_exits_zero(self):
        code, out, err = self.run_piped(b"hi\nsecond line\n")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(self.peer.reader.lines(4), [
            "* Client 2 joined", "[Client 2]: hi", "[Client 2]: second line", "* Client 2 left"])
        self.assertEqual(out, b"* welcome, you are Client 2 (type /help for commands)\n")

    def test_quiet_prints_nothing_when_a_line_is_piped_in(self):
        # Issue 24 M17: -q leaves out the welcome too; the line is still delivered, exit 0.
        code, out, err = self.run_piped(b"deploy done\n", "-q")
        self.assertEqual((code, out, err), (0, b"", b""))
        self.assertEqual(self.peer.reader.lines(3), [
            "* Client 2 joined", "[Client 2]: deploy done", "* Client 2 left"])

    def test_last_line_without_newline_is_sent(self):
        code, _, _ = self.run_piped(b"no newline at the end")
        self.assertEqual(code, 0)
        self.assertEqual(self.peer.reader.lines(3)[1], "[Client 2]: no newline at the end")

    def test_exit_and_quit_end_the_session(self):
        for word in ("exit", "/quit"):
            with self.subTest(word=word):
                code, _, err = self.run_piped(f"before\n{word}\nafter\n".encode())
                self.assertEqual((code, err), (0, b""))
                joined, before, left = self.peer.reader.lines(3)
                self.assertRegex(joined, r"^\* Client \d+ joined$")
                self.assertRegex(before, r"^\[Client \d+\]: before$")
                self.assertRegex(left, r"^\* Client \d+ left$")
                # Nothing else is queued for the peer ("after" was never sent): its /who answer
                # is the very next line.
                self.peer.sock.sendall(b"/who\n")
                self.assertEqual(self.peer.reader.line(), f"* online (1): {self.peer.name}")

    def test_nick_is_taken_right_after_connecting(self):
        code, out, _ = self.run_piped(b"hello\n", "--nick", "piper")
        self.assertEqual(code, 0)
        self.assertEqual(self.peer.reader.lines(4), [
            "* Client 2 joined", "* Client 2 is now piper", "[piper]: hello", "* piper left"])
        self.assertIn(b"* Client 2 is now piper\n", out)

    def test_received_lines_are_printed_as_they_arrive(self):
        client = start_client(self.server.port)
        self.addCleanup(finish_client, client)
        stdout = PipeReader(client.stdout)
        self.assertEqual(stdout.line(), b"* welcome, you are Client 2 (type /help for commands)\n")
        self.assertEqual(self.peer.reader.line(), "* Client 2 joined")
        self.peer.sock.sendall(b"ping\n")
        self.assertEqual(stdout.line(), b"[Client 1]: ping\n")
        client.stdin.write(b"pong\n")
        client.stdin.flush()
        self.assertEqual(self.peer.reader.line(), "[Client 2]: pong")
        client.stdin.close()
        self.assertEqual(client.wait(TIMEOUT), 0)
        self.assertNotIn(b"\x1b", stdout.data + stdout.rest())

    def test_stdin_from_a_file_and_from_dev_null(self):
        path = os.path.join(self._tmpdir(), "lines.txt")
        with open(path, "wb") as f:
            f.write(b"".join(b"file line %d\n" % i for i in range(3000)))
        with open(path, "rb") as f:
            client = start_client(self.server.port, stdin=f)
            client.communicate(timeout=TIMEOUT)
        self.assertEqual(client.returncode, 0)
        got = self.peer.reader.lines(3002, timeout=TIMEOUT)
        self.assertEqual(got[1:-1], [f"[Client 2]: file line {i}" for i in range(3000)])
        with open(os.devnull, "rb") as f:
            client = start_client(self.server.port, stdin=f)
            client.communicate(timeout=TIMEOUT)
        self.assertEqual(client.returncode, 0)
        self.assertEqual(self.peer.reader.lines(2), ["* Client 3 joined", "* Client 3 left"])

    def test_a_large_pipe_is_sent_completely(self):
        count = 20000
        data = b"".join(b"bulk %05d\n" % i for i in range(count))
        client = start_client(self.server.port)
        feeder = threading.Thread(target=lambda: (client.stdin.write(data), client.stdin.close()))
        feeder.start()
        got = self.peer.reader.lines(count + 1, timeout=30)
        feeder.join(TIMEOUT)
        self.assertEqual(client.wait(TIMEOUT), 0)
        client.stdout.close()
        client.stderr.close()
        self.assertEqual(got[1:], [f"[Client 2]: bulk {i:05d}" for i in range(count)])

    def test_server_shutdown_is_reported_on_stderr_with_status_1(self):
        # (Without --no-reconnect the client reconnects instead: e2e-chat_recovery.)
        client = start_client(self.server.port, "--no-reconnect")
        self.addCleanup(finish_client, client)
        self.assertEqual(self.peer.reader.line(), "* Client 2 joined")
        self.server.stop()
        out, err = client.communicate(timeout=TIMEOUT)
        self.assertEqual(client.returncode, 1)
        self.assertTrue(out.endswith(b"* server shutting down\n"), out)
        self.assertEqual(err, f"mux: error: 127.0.0.1:{self.server.port} ended the session: "
                              "server shutting down\n".encode())

    def _tmpdir(self):
        import tempfile
        directory = tempfile.mkdtemp(prefix="mux-chat-client-")
        self.addCleanup(shutil.rmtree, directory)
        return directory


class AgainstOtherServers(unittest.TestCase):
    def test_connection_refused(self):
        port = free_port()
        result = muxtest.run_mux("chat-client", "--port", str(port), input=b"")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, f"mux: error: connect to 127.0.0.1:{port}: Connection refused\n".encode())

    @contextlib.contextmanager
    def client_of_our_server(self):
        """chat-client connected to a socket of ours: yields (client, our end, its stdout, port)."""
        with socket.socket() as listener:
            listener.bind((muxtest.HOST, 0))
            listener.listen()
            port = listener.getsockname()[1]
            client = start_client(port)
            self.addCleanup(finish_client, client)
            listener.settimeout(TIMEOUT)
            conn, _ = listener.accept()
            yield client, conn, PipeReader(client.stdout), port

    def test_hostile_server_cannot_reach_the_terminal_raw(self):
        with self.client_of_our_server() as (client, conn, stdout, port):
            with conn:
                conn.sendall(b"\x1b[2J\x1b]0;owned\x07title\r\n\xff\xc2\x9b\x00end\nno newline")
                stdout.until(b"no newline\n")  # the unterminated line, shown after the quiet time
                conn.sendall(b"\n")
            # stdin stays open: the client is still chatting when the server goes away.
            out = stdout.rest()
            err = PipeReader(client.stderr).rest()
        self.assertEqual(client.wait(TIMEOUT), 1)
        self.assertEqual(out, "^[[2J^[]0;owned^Gtitle\n\ufffd\ufffd^@end\nno newline\n\n".encode())
        self.assertEqual(err, f"mux: error: connection to 127.0.0.1:{port} closed by the server\n".encode())

    def test_a_line_over_1_mib_is_shown_cut_and_marked(self):
        # Issue 24 M15: the client keeps at most 1 MiB of one line; the cut used to be silent.
        with self.client_of_our_server() as (client, conn, stdout, _):
            with conn:
                conn.sendall(b"x" * (1536 * 1024) + b"\nnext\n")
                stdout.until(b"next\n")
            client.stdin.close()
            out = stdout.rest()
        self.assertEqual(out, b"x" * (1024 * 1024) + b" [line cut at 1 MiB]\nnext\n")

    def test_works_against_ncat_chat(self):
        ncat = shutil.which("ncat")
        if not ncat:
            self.skipTest("ncat is not installed")
        port = free_port()
        broker = subprocess.Popen([ncat, "-l", "-k", "--chat", muxtest.HOST, str(port)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(broker.wait, TIMEOUT)
        self.addCleanup(broker.kill)
        listener_sock = muxtest.connect_retrying(port)
        self.addCleanup(listener_sock.close)
        reader = LineReader(listener_sock)
        # ncat tells the users it knows when another connects: once a probe's arrival is
        # announced to listener_sock, ncat has registered it. The probe stays connected: when a
        # closed connection's fd is reused by the next one at once, ncat may close the newcomer.
        probe = muxtest.connect(port)
        self.addCleanup(probe.close)
        self.assertRegex(reader.line(), r"^<announce> .* is connected as <user\d+>\.$")
        code_out_err = subprocess.run([muxtest.MUX, "chat-client", "--port", str(port)], input=b"hello ncat\n",
                                      capture_output=True, timeout=TIMEOUT)
        self.assertEqual(code_out_err.returncode, 0, code_out_err.stderr)
        line = reader.line()
        while line.startswith("<announce>"):
            line = reader.line()
        self.assertRegex(line, r"^<user\d+> hello ncat$")

        # And the other way round: what the room says reaches the client's stdout, once ncat
        # has announced the client's arrival (so it is registered).
        client = start_client(port)
        self.addCleanup(finish_client, client)
        while not re.match(r"^<announce> .* is connected as <user\d+>\.$", line := reader.line()):
            self.assertTrue(line.startswith("<announce>"), line)
        listener_sock.sendall(b"hi mux\n")
        stdout = PipeReader(client.stdout)
        line = stdout.line()
        while line.startswith(b"<announce>"):
            line = stdout.line()
        self.assertRegex(line, rb"^<user\d+> hi mux\n$")
        client.stdin.write(b"exit\n")
        client.stdin.flush()
        self.assertEqual(client.wait(TIMEOUT), 0)


class OnATerminal(unittest.TestCase):
    def test_line_editor_sends_typed_lines_and_shows_incoming_ones(self):
        server = Server("chat-server")
        self.addCleanup(server.stop)
        peer = Peer(server)
        self.addCleanup(peer.close)
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        client = subprocess.Popen([muxtest.MUX, "chat-client", "--port", str(server.port)],
                                  stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                  env={**os.environ, "TERM": "xterm", "HOME": "/nonexistent"})
        os.close(slave)
        self.addCleanup(finish_client, client)
        screen = _Screen(master)
        screen.wait_for(b"> ")
        self.assertEqual(peer.reader.line(), "* Client 2 joined")
        os.write(master, b"typed on a tty\r")
        self.assertEqual(peer.reader.line(), "[Client 2]: typed on a tty")
        os.write(master, b"half typ")
        screen.wait_for(b"half typ")
        peer.sock.sendall(b"while you type\n")
        screen.wait_for(b"[Client 1]: while you type")
        screen.wait_for(b"> half typ")  # the partial line is drawn again below the message
        os.write(master, b"ed\r")
        self.assertEqual(peer.reader.line(), "[Client 2]: half typed")
        os.write(master, b"\x1b[A\r")  # cursor up: the last line from history, sent again
        self.assertEqual(peer.reader.line(), "[Client 2]: half typed")
        os.write(master, b"\x04")  # Ctrl-D on an empty line
        self.assertEqual(client.wait(TIMEOUT), 0)
        self.assertEqual(peer.reader.line(), "* Client 2 left")


class _Screen:
    """Collects what a program writes to a pseudo-terminal."""

    def __init__(self, master):
        self.master = master
        self.data = b""

    def wait_for(self, needle):
        deadline = time.monotonic() + TIMEOUT
        start = len(self.data)
        while needle not in self.data[max(0, start - len(needle)):]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} not shown; screen so far: {self.data[-400:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.data += os.read(self.master, 4096)
                except OSError:
                    raise AssertionError(f"terminal closed before {needle!r}; got {self.data[-400:]!r}")


if __name__ == "__main__":
    muxtest.main()
