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
                              "trusted CA (") + r".*\(its fingerprint is sha256:[0-9A-F:]{95}\); "
            r"trust its CA with --tls-ca FILE, or pin it with --tls-pin sha256//[A-Za-z0-9+/]{43}=")

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

    def test_pins_as_openssl_prints_them_and_curl_takes_them(self):
        server_pem = pki().path("server.pem")
        printed = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                                  server_pem], capture_output=True, check=True,
                                 text=True).stdout.strip()
        self.assertRegex(printed, r"^(sha256|SHA256) Fingerprint=[0-9A-F:]{95}$")
        # curl's recipe for --pinnedpubkey: the SHA-256 of the DER public key, in base64.
        der = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", server_pem],
                             capture_output=True, check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der,
                             capture_output=True, check=True).stdout
        import base64
        import hashlib
        key_pin = "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()
        # The server logs both pins at start.
        self.server.wait_for_log(r"TLS: .*, sha256:[0-9A-F:]{95}, public key " + re.escape(key_pin))
        for pin in (printed, printed.split("=", 1)[1], key_pin):
            with self.subTest(pin=pin):
                result = self.chat(self.server.port, "--tls-pin", pin)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn(b"* online (", result.stdout)

    def test_pin_mismatch(self):
        other = "sha256:" + pki().fingerprint("server2")
        result = self.chat(self.server.port, "--tls-pin", other)
        actual = pki().fingerprint("server")
        self.assert_one_error(
            result, re.escape(f"TLS with {self.address}: the certificate does not match "
                              f"--tls-pin (its fingerprint is sha256:{actual})"))

    def test_bad_pin_text_is_a_usage_error(self):
        for sub in ("chat-client", "upload-client"):
            result = muxtest.run_mux(sub, "--port", str(self.server.port), "--file", "-",
                                     "--tls-pin", "md5:00", input=b"") if sub == "upload-client" \
                else self.chat(self.server.port, "--tls-pin", "md5:00")
            self.assertEqual(result.returncode, 2, result.stderr)
            lines = result.stderr.decode().splitlines()
            self.assertEqual(len(lines), 2, lines)
            self.assertRegex(lines[0], "^" + re.escape("mux: error: --tls-pin: 'md5:00' is not a pin: "
                                                       "expected a certificate fingerprint"))
            self.assertEqual(lines[1], f"Try 'mux {sub} --help' for more information.")

    def test_client_certificate_without_key_is_a_usage_error(self):
        for sub, extra in (("chat-client", []), ("upload-client", ["--file", "-"])):
            for flag, path in (("--tls-cert", pki().path("client.pem")),
                               ("--tls-key", pki().path("client.key"))):
                with self.subTest(sub=sub, flag=flag):
                    result = muxtest.run_mux(sub, "--port", str(self.server.port), *extra,
                                             "--tls-ca", pki().ca, flag, path, input=b"")
                    self.assertEqual(result.returncode, 2, result.stderr)
                    self.assertEqual(result.stderr.decode(),
                                     "mux: error: --tls-cert and --tls-key: a client certificate "
                                     f"needs both\nTry 'mux {sub} --help' for more information.\n")

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
                # chat-server's plaintext welcome, upload-server's TLS alert: both at once.
                why = (r"the peer does not speak TLS \(a plaintext port or client\?\)"
                       if sub == "chat-server" else
                       re.escape("the server answered the TLS hello with an 'unexpected "
                                 "message' alert (a plaintext port? connect without --tls)"))
                self.assert_one_error(
                    result, re.escape(f"TLS with 127.0.0.1:{server.port}: ") + why)

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


class ProtocolMixTest(ClientTlsCase):
    """Issue 24: every mix of TLS and plaintext, and of chat and upload, is named on both sides
    at once, and nothing is saved."""

    HINT = b"mux: this port speaks TLS; connect with --tls\n"

    def test_tls_client_on_a_plaintext_upload_port_gets_an_alert_and_nothing_is_saved(self):
        out = tempfile.mkdtemp(prefix="mux-mix-")
        self.addCleanup(shutil.rmtree, out, True)
        for serve in ("single", "fork"):
            with self.subTest(serve=serve), \
                    Server("upload-server", "--serve", serve, "--output-dir", out) as server:
                started = time.monotonic()
                s_client = subprocess.run(
                    ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}"],
                    stdin=subprocess.DEVNULL, capture_output=True, timeout=muxtest.DEFAULT_TIMEOUT)
                elapsed = time.monotonic() - started
                self.assertNotEqual(s_client.returncode, 0)
                self.assertIn(b"alert unexpected message", s_client.stderr)
                self.assertLess(elapsed, 3)  # not --header-timeout's 10 s
                server.wait_for_log(r"\[Client \d+\] 127\.0\.0\.1:\d+ refused: it speaks TLS "
                                    r"and this port does not \(start the server with --tls, or "
                                    r"connect without it\)$")
                with self.assertRaisesRegex(Exception, "UNEXPECTED_MESSAGE|unexpected message"):
                    test_tls.tls_connect(server.port)
            self.assertEqual(os.listdir(out), [])

    def test_plaintext_client_on_a_tls_port_reads_one_line(self):
        for sub in ("chat-server", "upload-server"):
            for serve in ("single", "fork"):
                with self.subTest(server=sub, serve=serve), \
                        Server(sub, "--serve", serve, *pki().server_flags()) as server:
                    sock = server.connect()
                    sock.sendall(b"hello in plaintext\n")
                    self.assertEqual(LineReader(sock).expect_eof(), self.HINT)
                    sock.close()
                    # Logged at the default level, and never as "without sending anything".
                    server.wait_for_log(r"handshake failed: the peer does not speak TLS \(a "
                                        r"plaintext client; told it to connect with --tls\)")
                    self.assertEqual(server.log_count("without sending anything"), 0)

    def test_upload_client_without_tls_on_a_tls_port(self):
        with Server("upload-server", *pki().server_flags()) as server:
            result = muxtest.run_mux("upload-client", "--file", "/etc/hostname",
                                     "--port", str(server.port))
            self.assert_one_error(result, re.escape(
                f"127.0.0.1:{server.port} speaks TLS on this port; connect with --tls"))

    def test_upload_client_on_a_chat_port(self):
        with Server("chat-server") as server:
            result = muxtest.run_mux("upload-client", "--file", "/etc/hostname",
                                     "--port", str(server.port))
            self.assert_one_error(result, re.escape(
                f"127.0.0.1:{server.port} is a chat-server, not an upload-server (it sent a chat "
                "welcome)"))


class SelfSignedTest(ClientTlsCase):
    """Issue 24: --tls alone makes a key and a self-signed certificate at start and logs the pin
    clients use; --tls-cert-cache keeps them, so the pin survives restarts."""

    PIN = r"; clients connect with --tls-pin (sha256//[A-Za-z0-9+/]{43}=)$"

    def test_tls_alone_makes_a_certificate_and_logs_its_pin(self):
        for sub in ("chat-server", "upload-server"):
            for serve in ("single", "fork"):
                with self.subTest(server=sub, serve=serve), \
                        Server(sub, "--serve", serve, "--tls") as server:
                    pin = server.wait_for_log(
                        r"TLS: CN=mux self-signed, expires .*, sha256:[0-9A-F:]{95}, public key "
                        r"(sha256//\S+) \(self-signed, made at start for this run; "
                        r"--tls-cert-cache DIR keeps it\)" + self.PIN).group(1)
                    if sub == "chat-server":
                        result = self.chat(server.port, "--tls-pin", pin)
                        self.assertEqual(result.returncode, 0, result.stderr)
                        self.assertIn(b"* online (", result.stdout)
                    else:
                        result = muxtest.run_mux("upload-client", "--port", str(server.port),
                                                 "--tls-pin", pin, "--file", "-",
                                                 input=b"over a made certificate")
                        self.assertEqual(result.returncode, 0, result.stderr)
                        server.wait_for_log(r"Received 23 bytes from ")
                    # Without the pin, the error names both ways out, this pin included.
                    result = self.chat(server.port, "--tls")
                    self.assert_one_error(result, ".*" + re.escape(
                        "; trust its CA with --tls-ca FILE, or pin it with --tls-pin " + pin))

    def test_a_kept_certificate_keeps_its_pin(self):
        work = tempfile.mkdtemp(prefix="mux-tls-cache-")
        self.addCleanup(shutil.rmtree, work, True)
        cache = os.path.join(work, "tls")
        with Server("chat-server", "--tls", "--tls-cert-cache", cache) as server:
            first = server.wait_for_log(
                r"\(self-signed, made at start and kept in " + re.escape(cache) + r"\)" +
                self.PIN).group(1)
        self.assertEqual(os.stat(os.path.join(cache, "mux-tls.key")).st_mode & 0o777, 0o600)
        with Server("upload-server", "--tls", "--tls-cert-cache", cache) as server:
            again = server.wait_for_log(
                r"\(self-signed, kept in " + re.escape(cache) + r"\)" + self.PIN).group(1)
            self.assertEqual(again, first)
            result = muxtest.run_mux("upload-client", "--port", str(server.port), "--tls-pin",
                                     first, "--file", "-", input=b"kept")
            self.assertEqual(result.returncode, 0, result.stderr)

    def test_a_kept_key_open_to_others_is_refused(self):
        work = tempfile.mkdtemp(prefix="mux-tls-cache-")
        self.addCleanup(shutil.rmtree, work, True)
        cache = os.path.join(work, "tls")
        with Server("chat-server", "--tls", "--tls-cert-cache", cache) as server:
            server.wait_for_log(self.PIN)
        key = os.path.join(cache, "mux-tls.key")
        os.chmod(key, 0o640)
        for sub in ("chat-server", "upload-server"):
            result = muxtest.run_mux(sub, "--port", "0", "--tls", "--tls-cert-cache", cache)
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr.decode(),
                             f"mux: error: --tls-cert-cache {key}: open to group or others (mode "
                             f"640, owner uid {os.geteuid()}); the key must be the server user's "
                             "alone: chmod 600 it, or delete it to make a new one\n")
        os.chmod(key, 0o600)  # once fixed, the kept pair serves again
        with Server("chat-server", "--tls", "--tls-cert-cache", cache) as server:
            server.wait_for_log(r"\(self-signed, kept in " + re.escape(cache) + r"\)")

    def test_cache_without_tls_is_a_usage_error(self):
        result = muxtest.run_mux("chat-server", "--port", "0", "--tls-cert-cache", "/tmp")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.decode(),
                         "mux: error: --tls-cert-cache keeps a certificate made with --tls (and no "
                         "--tls-cert)\nTry 'mux chat-server --help' for more information.\n")


if __name__ == "__main__":
    muxtest.main()
