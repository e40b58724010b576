"""Slots that drips cannot pin (issue 21, E4): an upload that brings a byte every few seconds,
never idle long enough for --idle-timeout, used to hold its slot for ever (with --max-clients 1 an
honest upload waited without end). With --min-rate it ends with ERR timeout once a 30 s window
brought less than the rate, and the honest upload waiting in the backlog then goes through."""

import socket
import threading
import time
import unittest

import muxtest

WINDOW = 30  # kRateWindow in src/upload/upload_session.hpp


class DripCases:
    def test_e4_a_drip_below_min_rate_frees_its_slot(self):
        server = self.upload_server("--max-clients", "1", "--min-rate", "100")
        drip = muxtest.connect(server.port)
        self.addCleanup(drip.close)
        drip.sendall(b"MUXUP/1 1000 drip.bin\n")
        stop = threading.Event()

        def dripping():
            while not stop.wait(3):
                try:
                    drip.sendall(b"x")
                except OSError:
                    return

        dripper = threading.Thread(target=dripping, daemon=True)
        dripper.start()
        self.addCleanup(stop.set)
        path = self.make_file("honest.bin", 64 * 1024)
        # The honest upload comes 20 s into the drip's window (upload-client waits 30 s at most
        # for its reply): it waits in the backlog until the window ends the drip.
        time.sleep(WINDOW - 10)
        started = time.monotonic()
        code, out, err = self.upload_client(server, path, timeout=WINDOW + 30)
        waited = time.monotonic() - started
        self.assertEqual(code, 0, err)
        # About 10 s until the window ends, then at most the ERR reply's 10 s lingering close.
        self.assertLess(waited, 25)
        reply = muxtest.LineReader(drip).line(timeout=5)
        self.assertRegex(reply, r"^ERR timeout: \d+ bytes in 30 s, below --min-rate 100 bytes/s$")


class Single(DripCases, muxtest.UploadCase):
    SERVE = "single"


class Fork(DripCases, muxtest.UploadCase):
    SERVE = "fork"


if __name__ == "__main__":
    muxtest.main()
