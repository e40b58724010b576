"""End-to-end tests of TLS in `mux chat-client` and `mux upload-client`: verification against a CA
file, host names, fingerprint pins, mutual TLS, and each way the server's certificate can be
wrong (untrusted, wrong name, expired, pin mismatch, a plaintext port), each of which must be one
`mux: error:` line and exit status 1. Peers: mux's own TLS servers and `ncat --ssl --chat -l`.
Certificates are made at run time by the openssl CLI (test_tls.Pki); nothing secret is committed."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import muxtest
import test_tls
from muxtest import LineReader, Server

WELCOME = test_tls.WELCOME


def setUpModule():
    test_tls.setUpModule()
    pki = test_tls.PKI
    # A self-signed certificate whose validity ended yesterday (openssl 3.0 takes -days -1).
    key, csr, cert = pki.path("expired.key"), pki.path("expired.csr"), pki.path("expired.pem")
    ext = pki.path("expired.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    test_tls.openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                     "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    test_tls.openssl("x509", "-req", "-in", csr, "-signkey", key, "-days", "-1",
                     "-extfile", ext, "-out", cert)


def tearDownModule():
    test_tls.tearDownModule()


def pki():
    return test_tls.PKI


def free_port():
    with socket.socket() as s:
        s.bind((muxtest.HOST, 0))
        return s.getsockname()[1]


class ClientTlsCase(unittest.TestCase):
    def assert_one_error(self, result, message):
        """Exit 1 and exactly one stderr line: `mux: error: ` + message (a regex)."""
        self.assertEqual(result.returncode, 1, result.stderr)
        lines = result.stderr.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], "^mux: error: " + message + "$")

    def chat(self, port, *flags, input=b"/who\n"):
        return muxtest.run_mux("chat-client", "--port", str(port), *flags, input=input)


class ChatClientTlsTest(ClientTlsCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server("chat-server", *pki().server_flags())
        cls.address = f"127.0.0.1:{cls.server.port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_verified_against_a_ca_file(self):
        result = self.chat(self.server.port, "--tls-ca", pki().ca, "-v")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout.decode(), r"\* online \(\d+\): ")
        self.assertRegex(result.stderr.decode(), r"\* TLS: TLSv1\.[23] ")

    def test_host_name_from_host_flag(self):
        result = self.chat(self.server.port, "--host", "localhost", "--tls-ca", pki().ca)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_lines_and_departure_reach_the_room(self):
        # The client's end of input is a close_notify then FIN: the room sees it leave cleanly.
        watcher = test_tls.tls_connect(self.server.port)
        self.addCleanup(watcher.close)
        lines = LineReader(watcher)
        self.assertRegex(lines.line(), WELCOME)
        result = self.chat(self.server.port, "--tls-ca", pki().ca, input=b"hello over TLS\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        name = re.match(r"^\* (Client \d+) joined$", lines.line()).group(1)
        self.assertEqual(lines.line(), f"[{name}]: hello over TLS")
        self.assertEqual(lines.line(), f"* {name} left")

    def test_untrusted_ca(self):
        # --tls alone trusts the system's CAs, which never signed the test CA.
        result = self.chat(self.server.port, "--tls")
        self.assert_one_error(
            result, re.escape(f"TLS with {self.address}: the certificate is not signed by a "
                              "trusted CA (") + r".*\(its fingerprint is sha256:[0-9A-F:]{95}\)")

    def test_wrong_host_name(self):
        result = self.chat(self.server.port, "--tls-ca", pki().ca,
                           "--tls-server-name", "wrong.example")
        self.assert_one_error(
            result, re.escape(f"TLS with {self.address}: the certificate is not for host name "
                              "'wrong.example' (its fingerprint is ") + r"sha256:[0-9A-F:]{95}\)")

    def test_pin_accepts_exactly_that_certificate(self):
        pin = "sha256:" + pki().fingerprint("server")
        result = self.chat(self.server.port, "--tls-pin", pin)  # implies --tls
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"* online (", result.stdout)

    def test_pin_mismatch(self):
        other = "sha256:" + pki().fingerprint("server2")
        result = self.chat(self.server.port, "--tls-pin", other)
        actual = pki().fingerprint("server")
        self.assert_one_error(
            result, re.escape(f"TLS with {self.address}: the certificate does not match "
                              f"--tls-pin (its fingerprint is sha256:{actual})"))

    def test_bad_pin_text_is_refused_before_connecting(self):
        result = self.chat(self.server.port, "--tls-pin", "md5:00")
        self.assert_one_error(result, re.escape("--tls-pin md5:00: expected sha256:") + ".*")

    def test_missing_ca_file(self):
        result = self.chat(self.server.port, "--tls-ca", "/nonexistent/ca.pem")
        self.assert_one_error(result,
                              re.escape("--tls-ca /nonexistent/ca.pem: No such file or directory"))


class TlsRefusalTest(ClientTlsCase):
    def test_tls_client_on_a_plaintext_port(self):
        for sub in ("chat-server", "upload-server"):
            with self.subTest(server=sub), Server(sub) as server:
                if sub == "chat-server":
                    result = self.chat(server.port, "--tls")
                else:
                    result = muxtest.run_mux("upload-client", "--file", "/etc/hostname",
                                             "--port", str(server.port), "--tls",
                                             "--connect-timeout", "3")
                self.assert_one_error(
                    result, re.escape(f"TLS with 127.0.0.1:{server.port}: ") +
                    r"(the peer does not speak TLS \(a plaintext port or client\?\)"
                    r"|no TLS handshake within 3 s \(a plaintext port\?\))")

    def test_expired_certificate(self):
        expired = ["--tls-cert", pki().path("expired.pem"), "--tls-key", pki().path("expired.key")]
        with Server("chat-server", *expired) as server:
            result = self.chat(server.port, "--tls-ca", pki().path("expired.pem"))
            self.assert_one_error(result, re.escape(
                f"TLS with 127.0.0.1:{server.port}: the peer's certificate has expired"))


class MutualTlsTest(ClientTlsCase):
    def client_cert(self):
        return ["--tls-cert", pki().path("client.pem"), "--tls-key", pki().path("client.key")]

    def test_chat_with_and_without_a_client_certificate(self):
        with Server("chat-server", *pki().server_flags(), "--tls-client-ca", pki().ca) as server:
            result = self.chat(server.port, "--tls-ca", pki().ca, *self.client_cert())
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(b"* online (", result.stdout)
            result = self.chat(server.port, "--tls-ca", pki().ca)
            self.assert_one_error(result, re.escape(
                f"connection to 127.0.0.1:{server.port}: the server requires a client "
                "certificate (--tls-cert and --tls-key)"))

    def test_upload_with_and_without_a_client_certificate(self):
        with Server("upload-server", *pki().server_flags(), "--tls-client-ca", pki().ca) as server:
            with tempfile.NamedTemporaryFile() as f:
                f.write(os.urandom(300_000))
                f.flush()
                result = muxtest.run_mux("upload-client", "-q", "--file", f.name, "--port",
                                         str(server.port), "--tls-ca", pki().ca,
                                         *self.client_cert())
                self.assertEqual(result.returncode, 0, result.stderr)
                server.wait_for_log(r"Received 300000 bytes from ")
                result = muxtest.run_mux("upload-client", "-q", "--file", f.name, "--port",
                                         str(server.port), "--tls-ca", pki().ca)
                # TLS 1.3: the refusal arrives after the client's handshake, while it sends.
                self.assert_one_error(
                    result, r"(send to|connection to) " +
                    re.escape(f"127.0.0.1:{server.port}: the server requires a client "
                              "certificate (--tls-cert and --tls-key)"))


class UploadClientTlsTest(ClientTlsCase):
    def test_file_and_stream_over_tls(self):
        with Server("upload-server", *pki().server_flags()) as server:
            data = os.urandom(3 * 1024 * 1024 + 17)
            with tempfile.NamedTemporaryFile() as f:
                f.write(data)
                f.flush()
                result = muxtest.run_mux("upload-client", "--file", f.name, "--port",
                                         str(server.port), "--host", "localhost",
                                         "--tls-ca", pki().ca)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(result.stdout.decode(), rf"Sent {len(data)} bytes in .*, verified ")
            server.wait_for_log(rf"Received {len(data)} bytes from ")
            first_seen = len(server.stdout_lines)
            # A stream of unknown length ends with close_notify: the server takes it as complete.
            result = muxtest.run_mux("upload-client", "--file", "-", "--port", str(server.port),
                                     "--tls-ca", pki().ca, input=data)
            self.assertEqual(result.returncode, 0, result.stderr)
            server.wait_for_log(rf"Received {len(data)} bytes from ", start=first_seen)
            self.assertEqual(server.log_count(r"incomplete"), 0)


class NcatPeerTest(ClientTlsCase):
    def test_chat_client_against_ncat_ssl_chat(self):
        if shutil.which("ncat") is None:
            self.skipTest("ncat is not installed")
        port = free_port()
        ncat = subprocess.Popen(
            ["ncat", "--ssl", "--ssl-cert", pki().path("server.pem"), "--ssl-key",
             pki().path("server.key"), "--chat", "-l", muxtest.HOST, str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(ncat.wait, muxtest.DEFAULT_TIMEOUT)
        self.addCleanup(ncat.kill)
        deadline = time.monotonic() + muxtest.DEFAULT_TIMEOUT
        while True:
            try:
                watcher = test_tls.tls_connect(port)
                break
            except (ConnectionRefusedError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.addCleanup(watcher.close)
        lines = LineReader(watcher)
        self.assertRegex(lines.line(), r"^<announce> .* is connected as <user\d+>\.$")
        self.assertRegex(lines.line(), r"^<announce> already connected: ")
        result = self.chat(port, "--host", "localhost", "--tls-ca", pki().ca,
                           input=b"hello ncat\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        user = re.match(r"^<announce> 127\.0\.0\.1 is connected as (<user\d+>)\.$",
                        lines.line()).group(1)
        self.assertRegex(lines.line(), r"^<announce> already connected: ")  # ncat tells all
        self.assertEqual(lines.line(), f"{user} hello ncat")
        self.assertEqual(lines.line(), f"<announce> {user} is disconnected.")


if __name__ == "__main__":
    muxtest.main()
