"""Uploads that survive interruption: --limit-rate (which the other tests use to stop an upload
part-way), automatic resume of named uploads, and --retry. The real binary on loopback, real
kills (SIGKILL of the client and of the server), hashes checked with xxhsum."""

import os
import subprocess
import time

import muxtest

MIB = 1 << 20


class RateLimitTests(muxtest.UploadCase):
    def test_limit_rate_caps_the_send_rate(self):
        server = self.upload_server()
        path = self.make_file("slow.bin", 2 * MIB)
        started = time.monotonic()
        code, out, err = self.upload_client(server, path, "--limit-rate", "1M")
        elapsed = time.monotonic() - started
        self.assertEqual((code, err), (0, ""), out)
        self.assertIn(f"Sent {2 * MIB} bytes", out)
        self.assertIn(muxtest.xxh128(path), out)
        # 2 MiB at 1 MiB/s with a tenth of a second of burst: at least 1.9 s; 1.5 leaves room.
        self.assertGreaterEqual(elapsed, 1.5)
        self.assertLess(elapsed, 30)

    def test_limit_rate_refuses_a_bad_value(self):
        server = self.upload_server()
        path = self.make_file("x.bin", 10)
        code, out, err = self.upload_client(server, path, "--limit-rate", "fast")
        self.assertEqual(code, 2, err)
        self.assertIn("--limit-rate", err)
        code, out, err = self.upload_client(server, path, "--limit-rate", "10")
        self.assertEqual(code, 2, err)


if __name__ == "__main__":
    muxtest.main()
