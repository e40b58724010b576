"""End-to-end tests of TLS and --allow/--deny on the servers: the real `mux chat-server` and
`mux upload-server` with certificates made at run time by the openssl CLI (no private key is
committed), talked to by Python's ssl module, `openssl s_client`, `socat OPENSSL:` and
`ncat --ssl`. Other loopback addresses (127.0.0.2, ...) stand for other machines."""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import muxtest
from muxtest import LineReader, Server

WELCOME = re.compile(r"^\* welcome, you are (Client \d+) \(type /help for commands\)$")
PKI = None


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate it signs, and a
    second server certificate for the reload test."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mux-tls-e2e-")
        self.ca = self.path("ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path("ca.key"), "-out", self.ca, "-days", "2",
                "-subj", "/CN=mux e2e CA")
        self.issue("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        self.issue("server2", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1")
        self.issue("client", "mux e2e client", "extendedKeyUsage=clientAuth")

    def path(self, name):
        return os.path.join(self.dir, name)

    def issue(self, name, common_name, extension):
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            f.write(extension + "\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", self.path(name + ".key"), "-out", self.path(name + ".csr"),
                "-subj", "/CN=" + common_name)
        openssl("x509", "-req", "-in", self.path(name + ".csr"), "-CA", self.ca,
                "-CAkey", self.path("ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", ext, "-out", self.path(name + ".pem"))

    def fingerprint(self, name):
        out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                              self.path(name + ".pem")], check=True, capture_output=True,
                             text=True).stdout
        return out.strip().split("=", 1)[1]

    def server_flags(self, name="server"):
        return ["--tls-cert", self.path(name + ".pem"), "--tls-key", self.path(name + ".key")]


def setUpModule():
    global PKI
    PKI = Pki()


def tearDownModule():
    shutil.rmtree(PKI.dir, ignore_errors=True)


def tls_connect(port, cert=None, source=None, server_hostname="localhost"):
    context = ssl.create_default_context(cafile=PKI.ca)
    if cert:
        context.load_cert_chain(PKI.path(cert + ".pem"), PKI.path(cert + ".key"))
    sock = socket.create_connection((muxtest.HOST, port), timeout=muxtest.DEFAULT_TIMEOUT,
                                    source_address=(source, 0) if source else None)
    return context.wrap_socket(sock, server_hostname=server_hostname)


def peer_fingerprint(tls_sock):
    import hashlib
    digest = hashlib.sha256(tls_sock.getpeercert(binary_form=True)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class ChatTlsTests(unittest.TestCase):
    def check_relay(self, serve):
        with Server("chat-server", "--serve", serve, *PKI.server_flags()) as server:
            server.wait_for_log(r"TLS: CN=localhost, expires .*, sha256:")
            alice = tls_connect(server.port)
            alice_lines = LineReader(alice)
            self.assertRegex(alice_lines.line(), WELCOME)
            bob = tls_connect(server.port)
            bob_lines = LineReader(bob)
            bob_name = WELCOME.match(bob_lines.line()).group(1)
            self.assertEqual(alice_lines.line(), f"* {bob_name} joined")
            bob.sendall(b"hello over TLS\n")
            self.assertEqual(alice_lines.line(), f"[{bob_name}]: hello over TLS")
            alice.close()
            bob.close()

    def test_relay_single(self):
        self.check_relay("single")

    def test_relay_fork(self):
        self.check_relay("fork")

    def test_openssl_s_client_chats(self):
        with Server("chat-server", *PKI.server_flags()) as server:
            watcher = tls_connect(server.port)
            lines = LineReader(watcher)
            self.assertRegex(lines.line(), WELCOME)
            client = subprocess.Popen(
                ["openssl", "s_client", "-quiet", "-verify_return_error", "-CAfile", PKI.ca,
                 "-verify_hostname", "localhost", "-connect", f"127.0.0.1:{server.port}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            try:
                joined = lines.line()
                name = re.match(r"^\* (Client \d+) joined$", joined).group(1)
                client.stdin.write(b"from s_client\n")
                client.stdin.flush()
                self.assertEqual(lines.line(), f"[{name}]: from s_client")
                client.stdin.write(b"/quit\n")  # s_client -quiet ignores end of input
                client.stdin.flush()
            finally:
                client.stdin.close()
                client.wait(timeout=muxtest.DEFAULT_TIMEOUT)
            self.assertRegex(lines.line(), rf"^\* {name} left")

    def test_ncat_ssl_chats(self):
        with Server("chat-server", *PKI.server_flags()) as server:
            watcher = tls_connect(server.port)
            lines = LineReader(watcher)
            self.assertRegex(lines.line(), WELCOME)
            result = subprocess.run(
                ["ncat", "--ssl", "--ssl-verify", "--ssl-trustfile", PKI.ca, "localhost",
                 str(server.port)], input=b"from ncat\n", capture_output=True,
                timeout=muxtest.DEFAULT_TIMEOUT)
            name = re.match(r"^\* (Client \d+) joined$", lines.line()).group(1)
            self.assertEqual(lines.line(), f"[{name}]: from ncat")
            self.assertRegex(result.stdout.decode(), r"^\* welcome, you are Client \d+")

    def test_plaintext_client_on_tls_port_is_closed(self):
        for serve in ("single", "fork"):
            with self.subTest(serve=serve), Server("chat-server", "--serve", serve,
                                                  *PKI.server_flags()) as server:
                sock = server.connect()
                sock.sendall(b"hello in plaintext\n")
                started = time.monotonic()
                received = LineReader(sock).expect_eof()
                self.assertLess(time.monotonic() - started, 5)
                self.assertEqual(received, b"mux: this port speaks TLS; connect with --tls\n")
                server.wait_for_log(r"handshake failed: the peer does not speak TLS")

    def test_mutual_tls(self):
        with Server("chat-server", *PKI.server_flags(), "--tls-client-ca", PKI.ca) as server:
            server.wait_for_log(r"client certificates required")
            with_cert = tls_connect(server.port, cert="client")
            self.assertRegex(LineReader(with_cert).line(), WELCOME)
            without = tls_connect(server.port)  # TLS 1.3: the refusal arrives on the first read
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                without.recv(100)
                without.recv(100)
            server.wait_for_log(r"the client sent no certificate \(--tls-client-ca requires one\)")

    def test_sighup_reloads_the_certificate_and_keeps_it_on_a_bad_file(self):
        cert, key = PKI.path("live.pem"), PKI.path("live.key")
        shutil.copy(PKI.path("server.pem"), cert)
        shutil.copy(PKI.path("server.key"), key)
        with Server("chat-server", "--tls-cert", cert, "--tls-key", key) as server:
            before = tls_connect(server.port)
            self.assertEqual(peer_fingerprint(before), PKI.fingerprint("server"))
            self.assertRegex(LineReader(before).line(), WELCOME)
            shutil.copy(PKI.path("server2.key"), key)  # no longer matches the certificate
            server.signal(signal.SIGHUP)
            server.wait_for_log(r"error: SIGHUP: could not reload the TLS certificate: "
                                rf"--tls-key {re.escape(key)}: does not match the certificate in "
                                rf"{re.escape(cert)}; still using the old one$")
            self.assertEqual(peer_fingerprint(tls_connect(server.port)), PKI.fingerprint("server"))
            shutil.copy(PKI.path("server2.pem"), cert)
            server.signal(signal.SIGHUP)
            server.wait_for_log(r"SIGHUP: reloaded the TLS certificate: ")
            self.assertEqual(peer_fingerprint(tls_connect(server.port)), PKI.fingerprint("server2"))
            before.sendall(b"/who\n")  # the connection made before the reload still works
            self.assertRegex(LineReader(before).line(), r"^\* ")

    def test_a_fifo_at_the_certificate_path_is_refused_without_freezing(self):
        """Issue 21 A7: a FIFO at --tls-cert froze the server at start and on SIGHUP (OpenSSL's
        open waits for a writer), and SIGTERM was then ignored."""
        work = tempfile.mkdtemp(prefix="mux-tls-fifo-")
        self.addCleanup(shutil.rmtree, work, True)
        fifo = os.path.join(work, "cert.fifo")
        os.mkfifo(fifo)
        for sub in ("chat-server", "upload-server"):
            result = muxtest.run_mux(sub, "--port", "0", "--tls-cert", fifo, "--tls-key",
                                     PKI.path("server.key"), timeout=10)
            self.assertEqual(result.returncode, 1)
            self.assertEqual(result.stderr.decode(),
                             f"mux: error: --tls-cert {fifo}: not a regular file\n")
        cert, key = os.path.join(work, "live.pem"), os.path.join(work, "live.key")
        shutil.copy(PKI.path("server.pem"), cert)
        shutil.copy(PKI.path("server.key"), key)
        with Server("chat-server", "--tls-cert", cert, "--tls-key", key) as server:
            os.unlink(cert)
            os.mkfifo(cert)
            server.signal(signal.SIGHUP)
            server.wait_for_log(r"error: SIGHUP: could not reload the TLS certificate: "
                                rf"--tls-cert {re.escape(cert)}: not a regular file; still using "
                                r"the old one$")
            self.assertEqual(peer_fingerprint(tls_connect(server.port)), PKI.fingerprint("server"))
            server.signal(signal.SIGTERM)
            self.assertEqual(server.wait(timeout=10), 0)


class UploadTlsTests(unittest.TestCase):
    PAYLOAD = bytes(range(256)) * 4096  # 1 MiB

    def check_header_upload(self, serve):
        with Server("upload-server", "--serve", serve, *PKI.server_flags()) as server:
            sock = tls_connect(server.port)
            sock.sendall(f"MUXUP/1 {len(self.PAYLOAD)} data.bin\n".encode() + self.PAYLOAD)
            reply = LineReader(sock).line()
            self.assertRegex(reply, rf"^OK {len(self.PAYLOAD)} [0-9a-f]{{32}}$")
            server.wait_for_log(rf"Received {len(self.PAYLOAD)} bytes")

    def test_header_upload_single(self):
        self.check_header_upload("single")

    def test_header_upload_fork(self):
        self.check_header_upload("fork")

    def check_header_timeout_is_told_inside_tls(self, serve):
        # A client that stays silent past --header-timeout and only then starts TLS reads the
        # ERR line inside TLS. (In fork mode the PARENT answers, as the client never sent a byte
        # that would have earned it a process: it once wrote the line in the clear, which broke
        # the client's handshake.)
        with Server("upload-server", "-v", "--serve", serve, "--header-timeout", "1",
                    *PKI.server_flags()) as server:
            raw = socket.create_connection((muxtest.HOST, server.port),
                                           timeout=muxtest.DEFAULT_TIMEOUT)
            time.sleep(1.5)
            context = ssl.create_default_context(cafile=PKI.ca)
            sock = context.wrap_socket(raw, server_hostname="localhost")
            self.assertEqual(LineReader(sock).expect_eof(),
                             b"ERR timeout: no header within 1 s\n")
            sock.close()
            server.wait_for_log(r"\[Client 1\] .* sent nothing: timeout: no header within 1 s$")

    def test_header_timeout_is_told_inside_tls_single(self):
        self.check_header_timeout_is_told_inside_tls("single")

    def test_header_timeout_is_told_inside_tls_fork(self):
        self.check_header_timeout_is_told_inside_tls("fork")

    def test_socat_raw_upload(self):
        with Server("upload-server", *PKI.server_flags()) as server:
            result = subprocess.run(
                ["socat", "-t", "5", "-", f"OPENSSL:localhost:{server.port},cafile={PKI.ca}"],
                input=self.PAYLOAD, capture_output=True, timeout=muxtest.DEFAULT_TIMEOUT)
            self.assertRegex(result.stdout.decode(), rf"^OK {len(self.PAYLOAD)} [0-9a-f]{{32}}\n$")
            server.wait_for_log(rf"Received {len(self.PAYLOAD)} bytes")

    def test_ncat_ssl_send_only_raw_upload_is_refused_as_incomplete(self):
        # ncat --ssl --send-only ends with a bare FIN, no close_notify: over TLS that cannot be
        # told from a cut link (issue 21 A6), so nothing is saved; the docs send people to
        # socat or upload-client instead.
        output = tempfile.mkdtemp(prefix="mux-tls-ncat-")
        self.addCleanup(shutil.rmtree, output, True)
        with Server("upload-server", "--output-dir", output, *PKI.server_flags()) as server:
            subprocess.run(
                ["ncat", "--ssl", "--ssl-verify", "--ssl-trustfile", PKI.ca, "--send-only",
                 "localhost", str(server.port)], input=self.PAYLOAD, capture_output=True,
                timeout=muxtest.DEFAULT_TIMEOUT, check=True)
            server.wait_for_log(rf"Received {len(self.PAYLOAD)} bytes from \[Client 1\] .*: "
                                r"incomplete \(the TLS connection ended without close_notify")
            self.assertEqual(os.listdir(output), [])

    def test_a_raw_upload_cut_without_close_notify_is_not_saved(self):
        """Issue 21 A6: a raw upload ends with the connection, so over TLS only the sender's
        close_notify says the data is whole; a bare FIN (a cut link, a truncation attack) was
        saved and answered OK."""
        for serve in ("single", "fork"):
            output = tempfile.mkdtemp(prefix="mux-tls-cut-")
            self.addCleanup(shutil.rmtree, output, True)
            with self.subTest(serve=serve), Server("upload-server", "--serve", serve,
                                                   "--output-dir", output,
                                                   *PKI.server_flags()) as server:
                context = ssl.create_default_context(cafile=PKI.ca)
                sock = context.wrap_socket(muxtest.connect(server.port),
                                           server_hostname="localhost")
                sock.sendall(self.PAYLOAD)
                socket.socket.shutdown(sock, socket.SHUT_WR)  # the FIN alone, no close_notify
                self.assertEqual(LineReader(sock).line(),
                                 "ERR incomplete: the TLS connection ended without close_notify, "
                                 "so the end of the data is not known")
                server.wait_for_log(r"Received \d+ bytes from \[Client 1\] .*: incomplete \(the "
                                    r"TLS connection ended without close_notify")
                self.assertEqual(os.listdir(output), [])


class AddressFilterTests(unittest.TestCase):
    def test_chat_deny_and_allow(self):
        for serve in ("single", "fork"):
            with self.subTest(serve=serve), Server(
                    "chat-server", "--serve", serve, "--allow", "127.0.0.0/8", "--deny",
                    "127.0.0.2") as server:
                refused = LineReader(muxtest.connect_from("127.0.0.2", server.port))
                self.assertEqual(refused.line(), "* not allowed")
                refused.expect_eof()
                self.assertRegex(LineReader(muxtest.connect_from("127.0.0.3", server.port)).line(),
                                 WELCOME)

    def test_upload_allow_only(self):
        with Server("upload-server", "--allow", "127.0.0.3/32", "--allow", "::1") as server:
            refused = muxtest.connect_from("127.0.0.2", server.port)
            self.assertEqual(LineReader(refused).line(), "ERR refused: address not allowed")
            allowed = muxtest.connect_from("127.0.0.3", server.port)
            allowed.sendall(b"MUXUP/1 3 a.txt\nabc")
            self.assertRegex(LineReader(allowed).line(), r"^OK 3 [0-9a-f]{32}$")


class StartupErrorTests(unittest.TestCase):
    def test_errors_name_the_file_and_exit_1(self):
        missing = PKI.path("missing.pem")
        cases = [
            (["--tls-cert", missing, "--tls-key", PKI.path("server.key")],
             f"mux: error: --tls-cert {missing}: No such file or directory"),
            (["--tls-cert", PKI.path("server.pem"), "--tls-key", PKI.path("client.key")],
             f"mux: error: --tls-key {PKI.path('client.key')}: does not match the certificate "
             f"in {PKI.path('server.pem')}"),
        ]
        for subcommand in ("chat-server", "upload-server"):
            for flags, message in cases:
                with self.subTest(subcommand=subcommand, flags=flags):
                    result = muxtest.run_mux(subcommand, "--port", "0", *flags)
                    self.assertEqual(result.returncode, 1)
                    self.assertEqual(result.stderr.decode().strip().splitlines()[-1], message)

    def test_half_a_certificate_is_a_usage_error(self):
        """A flag missing its partner is a mistake in the command line: exit 2, with the hint."""
        cases = [
            (["--tls-cert", PKI.path("server.pem")],
             f"--tls-cert {PKI.path('server.pem')}: needs --tls-key too"),
            (["--tls-key", PKI.path("server.key")],
             "--tls-key needs --tls-cert (TLS is off without it)"),
            (["--tls-client-ca", PKI.ca],
             "--tls-client-ca needs --tls-cert or --tls (TLS is off without them)"),
        ]
        for subcommand in ("chat-server", "upload-server"):
            for flags, message in cases:
                with self.subTest(subcommand=subcommand, flags=flags):
                    result = muxtest.run_mux(subcommand, "--port", "0", *flags)
                    self.assertEqual(result.returncode, 2)
                    self.assertEqual(result.stderr.decode(),
                                     f"mux: error: {message}\n"
                                     f"Try 'mux {subcommand} --help' for more information.\n")

    def test_bad_cidr_is_a_usage_error(self):
        result = muxtest.run_mux("chat-server", "--port", "0", "--deny", "example.org")
        self.assertEqual(result.returncode, 2)
        self.assertIn("mux: error: --deny: 'example.org' is not an address or CIDR range",
                      result.stderr.decode())


if __name__ == "__main__":
    muxtest.main()
