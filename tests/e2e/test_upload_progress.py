"""End-to-end tests of upload-client's progress (issue 13, "Progress"): on a terminal (a
pseudo-terminal) the line fits the width and is re-fitted on SIGWINCH, has a bar, and says
"stalled" when nothing moves; a stream from standard input shows progress while it is read; in a
pipe the "Sent N MiB" lines and the summary use one unit system (IEC) whose labels match the
numbers."""

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import termios
import threading
import time
import unittest

import muxtest
from muxtest import Server

TIMEOUT = muxtest.DEFAULT_TIMEOUT
MIB = 1 << 20
ESCAPE = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


def set_size(fd, rows, columns):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


class Terminal:
    """What a program draws on a pseudo-terminal, read with deadlines."""

    def __init__(self, master):
        self.master = master
        self.data = b""

    def wait_for(self, pattern, start=0, timeout=TIMEOUT):
        """Waits until `pattern` (bytes regex) matches what was drawn after byte `start`."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.data[start:])
            if match:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not drawn within {timeout}s; got {self.data[-300:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.data += os.read(self.master, 65536)
                except OSError:  # the program exited and the terminal closed
                    raise AssertionError(f"terminal closed before {pattern!r}; got {self.data[-300:]!r}")

    def lines_drawn(self, start=0, end=None):
        """Each redraw of the progress line (text between carriage returns), escapes removed."""
        text = ESCAPE.sub(b"", self.data[start:end])
        return [segment for segment in re.split(rb"[\r\n]", text) if segment]


class OnATerminal(unittest.TestCase):
    def start_client(self, port, *args, columns=80, stdin=subprocess.DEVNULL):
        master, slave = pty.openpty()
        self.addCleanup(os.close, master)
        set_size(master, 24, columns)
        client = subprocess.Popen([muxtest.MUX, "upload-client", "--port", str(port), *args],
                                  stdin=stdin, stdout=slave, stderr=slave, close_fds=True,
                                  env={**os.environ, "TERM": "xterm"})
        os.close(slave)
        self.addCleanup(self.stop, client)
        return client, master, Terminal(master)

    @staticmethod
    def stop(client):
        if client.poll() is None:
            client.kill()
        client.wait(TIMEOUT)

    def stalled_server(self):
        """A listener that accepts and never reads: the upload stalls once the buffers are full."""
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((muxtest.HOST, 0))
        listener.listen()
        accepted = []
        thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
        thread.start()
        self.addCleanup(lambda: [conn.close() for conn in accepted])
        return listener.getsockname()[1]

    def big_file(self, size):
        directory = tempfile.mkdtemp(prefix="mux-progress-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "big.bin")
        with open(path, "wb") as f:
            f.truncate(size)
        return path

    def test_the_line_fits_the_width_shows_a_stall_and_refits_on_resize(self):
        port = self.stalled_server()
        path = self.big_file(256 * MIB)
        client, master, screen = self.start_client(port, "--file", path, "--timeout", "60", columns=40)
        # Loopback buffers take a few MiB, then nothing moves: after 3 s the line says so.
        screen.wait_for(rb"stalled 0:0[3-9]")
        narrow = screen.lines_drawn()
        self.assertTrue(narrow)
        for line in narrow:
            self.assertLessEqual(len(line), 39, line)  # never the last column: no wrap, no scroll
            self.assertRegex(line.decode(), r"^ *\d+%")
        self.assertNotIn(b"[", b"".join(narrow))  # 40 columns: no room for a useful bar

        start = len(screen.data)
        set_size(master, 24, 120)
        client.send_signal(signal.SIGWINCH)
        match = screen.wait_for(rb"\r( *\d+% \[[=> ]+\] [^\r]*/ 256\.0 MiB stalled [0-9:]+ [0-9:]+)\x1b\[K", start)
        self.assertEqual(len(match.group(1)), 119)  # the bar takes the rest of the new width
        self.assertIsNone(client.poll())

    def test_a_stream_from_standard_input_shows_progress_while_it_is_read(self):
        directory = tempfile.mkdtemp(prefix="mux-progress-")
        self.addCleanup(shutil.rmtree, directory)
        server = Server("upload-server", "--output-dir", directory)
        self.addCleanup(server.stop)
        reader, writer = os.pipe()
        client, master, screen = self.start_client(server.port, "--file", "-", "--name", "piped.bin",
                                                   stdin=reader)
        os.close(reader)
        os.write(writer, b"x" * (2 * MIB))
        # Drawn while standard input is still open: sent bytes, no percent (the size is unknown).
        screen.wait_for(rb"\r2\.0 MiB [0-9.]+ (?:[KMG]i)?B/s")
        os.write(writer, b"y" * (3 * MIB))
        os.close(writer)
        summary = screen.wait_for(rb"Sent (\d+) bytes in ([0-9.]+) s \(([0-9.]+) ((?:[KMG]i)?B)/s\), verified")
        self.assertEqual(int(summary.group(1)), 5 * MIB)
        self.assertEqual(client.wait(TIMEOUT), 0)


class InAPipe(unittest.TestCase):
    def test_sent_lines_and_the_summary_are_iec_and_match_their_numbers(self):
        directory = tempfile.mkdtemp(prefix="mux-progress-")
        self.addCleanup(shutil.rmtree, directory)
        server = Server("upload-server", "--output-dir", directory)
        self.addCleanup(server.stop)
        size = 25 * MIB
        client = subprocess.Popen([muxtest.MUX, "upload-client", "--port", str(server.port), "--file", "-"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = client.communicate(b"z" * size, timeout=60)
        self.assertEqual((client.returncode, err), (0, b""))
        lines = out.decode().splitlines()
        self.assertEqual(lines[:2], ["Sent 10 MiB", "Sent 20 MiB"])
        self.assertNotIn("\x1b", out.decode())
        match = re.fullmatch(r"Sent (\d+) bytes in ([0-9.]+) s \(([0-9.]+) ((?:[KMG]i)?B)/s\), verified [0-9a-f]{32}, saved as stdin",
                             lines[2])
        self.assertIsNotNone(match, lines)
        self.assertEqual(len(lines), 3)
        # The label is the unit the number is in: bytes / seconds, in powers of 1024.
        scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[match.group(4)]
        seconds = float(match.group(2))
        if seconds >= 0.01:  # a rounded time of a few ms says little about the rate
            expected = int(match.group(1)) / seconds / scale
            self.assertAlmostEqual(float(match.group(3)), expected, delta=max(0.15, expected * 0.02))


if __name__ == "__main__":
    muxtest.main()
