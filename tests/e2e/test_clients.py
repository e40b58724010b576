"""The two clients as a person and a script meet them: upload-client stopped by SIGINT/SIGTERM
exits 130/143 and says how far it got."""

import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import unittest

import muxtest


class StalledServer:
    """Accepts one connection, reads the first `read_first` bytes, then stops reading (the
    client's send stalls once the socket buffers are full)."""

    def __init__(self, read_first=4096):
        self.listener = socket.socket()
        self.listener.bind((muxtest.HOST, 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.received = threading.Event()
        self.conn = None
        self.thread = threading.Thread(target=self._serve, args=(read_first,), daemon=True)
        self.thread.start()

    def _serve(self, read_first):
        self.listener.settimeout(muxtest.DEFAULT_TIMEOUT)
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(muxtest.DEFAULT_TIMEOUT)
        got = b""
        while len(got) < read_first:
            chunk = self.conn.recv(read_first - len(got))
            if not chunk:
                break
            got += chunk
        self.header = got.split(b"\n", 1)[0]
        self.received.set()

    def close(self):
        self.thread.join(muxtest.DEFAULT_TIMEOUT)
        if self.conn:
            self.conn.close()
        self.listener.close()


class UploadInterruptTest(unittest.TestCase):
    def test_sigint_and_sigterm_exit_130_and_143_saying_how_far(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "big.bin")
            with open(path, "wb") as big:
                big.truncate(64 << 20)
            for signo, status, name in [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")]:
                with self.subTest(signal=name):
                    server = StalledServer()
                    proc = subprocess.Popen(
                        [muxtest.MUX, "upload-client", "--file", path, "--port", str(server.port)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
                    try:
                        # The header arrives from inside the send loop, where the signals are handled.
                        self.assertTrue(server.received.wait(muxtest.DEFAULT_TIMEOUT))
                        # A named file is resumable: it carries its upload key, and asks for
                        # the server's acknowledgements (honest progress).
                        self.assertRegex(server.header.decode(),
                                         r"\AMUXUP/1 67108864 big\.bin reply-name=1 "
                                         r"resume=[0-9a-f]{32} confirm=1 ack=1\Z")
                        proc.send_signal(signo)
                        out, err = proc.communicate(timeout=muxtest.DEFAULT_TIMEOUT)
                    finally:
                        if proc.poll() is None:
                            proc.kill()
                            proc.communicate()
                        server.close()
                    self.assertEqual(proc.returncode, status, err)
                    self.assertRegex(
                        err.decode(),
                        rf"\Amux: error: interrupted by {name} after sending \d+(\.\d)? (B|KiB|MiB) of "
                        rf"64\.0 MiB to 127\.0\.0\.1:{server.port} in \d+ s; run the same command "
                        r"again to resume\n\Z")


if __name__ == "__main__":
    muxtest.main()
