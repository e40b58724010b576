"""End-to-end tests of `mux chat-client`'s exit status (issue 9, point 7): 0 only when every line
read from stdin was delivered, that is written, half-closed, and followed by the server's orderly
close with no notice that it ended the session; 1 with one `mux: error:` line otherwise (a
refusal such as `* server full`, a reset, a close before the end of input, no close at all)."""

import re
import socket
import struct
import threading
import unittest

import muxtest
from muxtest import LineReader

TIMEOUT = muxtest.DEFAULT_TIMEOUT
RUNS = 30


def run_client(port, data, *args):
    return muxtest.run_mux("chat-client", "--port", str(port), *args, input=data, timeout=TIMEOUT)


def error_lines(stderr):
    lines = stderr.decode("utf-8", "replace").splitlines()
    return lines


class ExitStatusCases(muxtest.ServerCases):
    def hold_the_only_slot(self, server):
        holder = server.connect()
        self.addCleanup(holder.close)
        reader = LineReader(holder)
        self.assertEqual(reader.line(), "* welcome, you are Client 1 (type /help for commands)")
        return holder, reader

    def test_a_full_server_makes_every_piped_run_fail(self):
        server = self.start("--max-clients", "1")
        holder, reader = self.hold_the_only_slot(server)
        failures = []
        for _ in range(RUNS):
            result = run_client(server.port, b"x\n")
            lines = error_lines(result.stderr)
            if result.returncode != 1 or len(lines) != 1 or not lines[0].startswith("mux: error: "):
                failures.append((result.returncode, result.stdout, result.stderr))
            # Most runs read the refusal notice; the rest meet the reset it causes. Both say so.
            elif not re.search(r"server full|reset|closed by the server", lines[0]):
                failures.append((result.returncode, result.stdout, result.stderr))
        self.assertEqual(failures, [], f"{len(failures)} of {RUNS} runs did not fail as they should")
        # And nothing of theirs reached the room: the holder's /who answer is its next line.
        holder.sendall(b"/who\n")
        self.assertEqual(reader.line(), "* online (1): Client 1")

    def test_the_refusal_is_named_in_the_error_line(self):
        server = self.start("--max-clients", "1")
        self.hold_the_only_slot(server)
        # Nothing to send: the client reads the notice and the close, no reset can race it.
        result = run_client(server.port, b"")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"* server full\n")
        self.assertEqual(result.stderr,
                         f"mux: error: 127.0.0.1:{server.port} ended the session: server full\n".encode())

    def test_a_piped_session_that_is_delivered_exits_zero(self):
        server = self.start("--max-clients", "2", *muxtest.CHAT_UNLIMITED)
        _, reader = self.hold_the_only_slot(server)
        for run in range(5):
            lines = [f"run {run} line {i}" for i in range(50)]
            result = run_client(server.port, "".join(line + "\n" for line in lines).encode())
            self.assertEqual((result.returncode, result.stderr), (0, b""))
            name = f"Client {run + 2}"
            self.assertEqual(reader.lines(52), [f"* {name} joined", *[f"[{name}]: {line}" for line in lines],
                                                f"* {name} left"])


class SingleModeTests(ExitStatusCases, unittest.TestCase):
    MODE = "single"


class ForkModeTests(ExitStatusCases, unittest.TestCase):
    MODE = "fork"


class HandRolledServer:
    """A listener whose one connection is handled by `behaviour(conn)` in a thread."""

    def __init__(self, behaviour, receive_buffer=None):
        self.listener = socket.socket()
        if receive_buffer:  # inherited by the accepted socket: a small window
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.listener.bind((muxtest.HOST, 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.listener.settimeout(TIMEOUT)
        self.thread = threading.Thread(target=self._serve, args=(behaviour,), daemon=True)
        self.thread.start()

    def _serve(self, behaviour):
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            # A chat server speaks first: chat-client sends nothing before a welcome (issue 23).
            conn.sendall(b"hello from a hand-rolled chat server\n")
            behaviour(conn)

    def close(self):
        self.thread.join(TIMEOUT)
        self.listener.close()


def read_to_end(conn):
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    return data


class AgainstServersThatDoNotConfirm(unittest.TestCase):
    def serve(self, behaviour, **options):
        server = HandRolledServer(behaviour, **options)
        self.addCleanup(server.close)
        return server

    def test_a_reset_after_the_half_close_is_a_failure(self):
        received = []

        def reset_after_reading(conn):
            received.append(read_to_end(conn))
            # Close with a reset, as a server that throws unread input away does.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

        server = self.serve(reset_after_reading)
        result = run_client(server.port, b"hello\n")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr,
                         f"mux: error: connection to 127.0.0.1:{server.port}: Connection reset by peer\n".encode())

    def test_a_server_that_never_closes_leaves_delivery_unconfirmed(self):
        done = threading.Event()

        def read_and_hold(conn):
            read_to_end(conn)
            done.wait(TIMEOUT)

        server = self.serve(read_and_hold)
        self.addCleanup(done.set)
        result = run_client(server.port, b"hello\n", "--confirm-timeout", "1s")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, (
            f"mux: error: 127.0.0.1:{server.port} did not close the connection within 1 s of the end "
            "of input, so delivery of the last lines is unconfirmed (see --confirm-timeout)\n").encode())

    def test_a_server_that_stops_reading_leaves_the_rest_undelivered(self):
        done = threading.Event()

        def read_a_little_and_hold(conn):
            conn.recv(1)
            done.wait(TIMEOUT)

        server = self.serve(read_a_little_and_hold, receive_buffer=4096)
        self.addCleanup(done.set)
        # All of it is read from stdin (under the client's 1 MiB queue), little of it gets into
        # the server's small window: the rest stays queued or unacknowledged on the client's side.
        result = run_client(server.port, b"y" * 200000 + b"\n", "--confirm-timeout", "1s")
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr.decode(),
                         rf"^mux: error: 127\.0\.0\.1:{server.port} took none of our last \d+ bytes for 1 s, "
                         r"so they were not delivered \(see --confirm-timeout\)\n$")

    def test_a_close_before_the_end_of_input_is_a_failure(self):
        def close_at_once(conn):
            conn.recv(1)

        server = self.serve(close_at_once)
        # stdin stays open until the client has exited: the close comes first.
        client = muxtest.subprocess.Popen([muxtest.MUX, "chat-client", "--port", str(server.port)],
                                          stdin=muxtest.subprocess.PIPE, stdout=muxtest.subprocess.PIPE,
                                          stderr=muxtest.subprocess.PIPE)
        client.stdin.write(b"a\n")
        client.stdin.flush()
        try:
            code = client.wait(TIMEOUT)
        finally:
            client.kill()
        err = client.stderr.read()
        for stream in (client.stdin, client.stdout, client.stderr):
            stream.close()
        self.assertEqual(code, 1)
        self.assertRegex(err.decode(), r"^mux: error: (connection to 127\.0\.0\.1:\d+ closed by the server"
                                       r"|connection to 127\.0\.0\.1:\d+: Connection reset by peer)\n$")


if __name__ == "__main__":
    muxtest.main()
