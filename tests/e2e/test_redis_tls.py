"""End-to-end tests of the ways in to a guarded Redis: a password in the --redis URL (requirepass),
an ACL user, and TLS (rediss://, --redis-tls-*) against a real redis-server built with TLS
(Debian's is), certificates made at run time by the openssl CLI (test_tls.Pki). A refused or
unverifiable Redis is logged once and the local room keeps working, as for an unreachable one."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import muxtest
import test_tls
from muxtest import Server
from test_redis import (BACK, REDIS_SERVER, SLOW, UNREACHABLE, Client, Redis, chat_server,
                        free_port, local_room_still_works)

PKI = None


def setUpModule():
    global PKI
    if REDIS_SERVER is not None:
        PKI = test_tls.Pki()


def tearDownModule():
    if PKI is not None:
        shutil.rmtree(PKI.dir, ignore_errors=True)


def tls_redis(*extra, password="s3cret", port=None, tls_port=None):
    """A redis-server that takes TLS on its TLS port (the plain port is for the test's own
    commands), with requirepass."""
    tls_port = tls_port or free_port()
    redis = Redis(port=port, extra=["--tls-port", str(tls_port), "--tls-cert-file", PKI.path("server.pem"),
                         "--tls-key-file", PKI.path("server.key"), "--tls-ca-cert-file", PKI.ca,
                         "--requirepass", password, *extra], password=password)
    redis.tls_port = tls_port
    return redis


class Guarded(unittest.TestCase):
    def setUp(self):
        self.servers = []
        self.clients = []
        self.redis = None

    def tearDown(self):
        try:
            for client in self.clients:
                client.close()
        finally:
            try:
                for server in self.servers:
                    server.stop()
            finally:
                if self.redis:
                    self.redis.close()

    def connected(self, url, *args):
        server = chat_server(url, *args)
        self.servers.append(server)
        return server

    def refused(self, url, *args):
        server = Server("chat-server", "--redis", url, "--room", "test", *args)
        self.servers.append(server)
        server.wait_for_log(r"redis: cannot reach .*; retrying", timeout=SLOW)
        return server

    def client(self, server):
        client = Client(server)
        self.clients.append(client)
        return client

    def assert_shared(self, a, b):
        one, two = self.client(a), self.client(b)
        one.skip_to(f"* {two.name} joined")
        two.send("across\n")
        one.skip_to(f"[{two.name}]: across")

    def assert_local_room_works(self, server, reason):
        """One log line with `reason`; clients are told once and still hear each other."""
        self.assertEqual(server.log_count(r"redis: cannot reach"), 1)
        self.assertEqual(server.log_count(reason), 1)
        local_room_still_works(lambda: self.client(server))


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class Password(Guarded):
    def test_password_in_the_url(self):
        self.redis = Redis(extra=["--requirepass", "p@ss:w/rd"], password="p@ss:w/rd")
        url = f"redis://:p%40ss%3Aw%2Frd@127.0.0.1:{self.redis.port}/3"
        self.assert_shared(self.connected(url), self.connected(url.replace(":p", "default:p", 1)))
        # The room's keys are in database 3 and nowhere else.
        keyspace = subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis.port), "--no-auth-warning",
             "-a", "p@ss:w/rd", "INFO", "keyspace"], capture_output=True, text=True,
            timeout=SLOW).stdout
        self.assertEqual(re.findall(r"^db\d+", keyspace, re.M), ["db3"])

    def test_wrong_password_keeps_the_local_room(self):
        self.redis = Redis(extra=["--requirepass", "right"], password="right")
        server = self.refused(f"redis://:wrong@127.0.0.1:{self.redis.port}")
        self.assert_local_room_works(server, r"AUTH: WRONGPASS")
        self.assertEqual(server.log_count("wrong"), 0)  # the password is never logged

    def test_acl_user(self):
        self.redis = Redis(password=None)
        self.assertEqual(self.redis.command("ACL", "SETUSER", "chat", "on", ">pw", "~mux:*",
                                            "&mux:*", "+@all"), b"+OK")
        url = f"redis://chat:pw@127.0.0.1:{self.redis.port}"
        self.assert_shared(self.connected(url), self.connected(url))
        server = self.refused(f"redis://nobody:pw@127.0.0.1:{self.redis.port}")
        self.assertEqual(server.log_count(r"AUTH: WRONGPASS"), 1)

    def test_password_from_a_file_or_the_environment_stays_out_of_sight(self):
        """Issue 21 D11: a password in the URL is in /proc/PID/cmdline for every local user, and a
        bad URL echoed it in the error."""
        secret = "Tr0ub4dor-and-3"
        self.redis = Redis(extra=["--requirepass", secret], password=secret)
        work = tempfile.mkdtemp(prefix="mux-redis-password-")
        self.addCleanup(shutil.rmtree, work, True)
        path = os.path.join(work, "password")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secret + "\r\n")
        url = f"redis://127.0.0.1:{self.redis.port}"
        from_file = self.connected(url, "--redis-password-file", path)
        env = dict(os.environ, MUX_REDIS_PASSWORD=secret)
        from_environment = Server("chat-server", "--redis", url, "--room", "test", env=env)
        self.servers.append(from_environment)
        from_environment.wait_for_log(r"redis: connected to", timeout=SLOW)
        self.assert_shared(from_file, from_environment)
        for server in (from_file, from_environment):
            self.assertEqual(server.log_count("warning: the Redis password"), 0)
            with open(f"/proc/{server.proc.pid}/cmdline", "rb") as f:
                self.assertNotIn(secret.encode(), f.read())
        # In the URL it works, with a warning.
        in_url = self.connected(f"redis://:{secret}@127.0.0.1:{self.redis.port}")
        self.assertEqual(in_url.log_count(
            r"warning: the Redis password in --redis is in the process list for every local user "
            r"to read: use --redis-password-file FILE \(mode 600\) or MUX_REDIS_PASSWORD$"), 1)
        # A bad URL never shows it; a loose file is refused; the file needs --redis.
        result = muxtest.run_mux("chat-server", "--redis", f"redis://:{secret}@host:port")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.decode().splitlines()[0],
                         "mux: error: --redis: 'redis://***@host:port' is not a Redis URL: the port "
                         "must be a number from 1 to 65535")
        os.chmod(path, 0o644)
        result = muxtest.run_mux("chat-server", "--port", "0", "--redis", url,
                                 "--redis-password-file", path)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr.decode(),
                         f"mux: error: --redis-password-file {path}: group or others can access it "
                         f"(mode 0644); run: chmod 600 {path}\n")
        result = muxtest.run_mux("chat-server", "--redis-password-file", path)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stderr.decode().splitlines()[0],
                         "mux: error: --redis-password-file: needs --redis URL")


@unittest.skipIf(REDIS_SERVER is None, "redis-server is not installed")
class Tls(Guarded):
    def test_two_servers_share_a_room_over_tls(self):
        self.redis = tls_redis("--tls-auth-clients", "no")
        ca = ["--redis-tls-ca", PKI.ca]
        a = self.connected(f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}", *ca)
        b = self.connected(f"rediss://:s3cret@localhost:{self.redis.tls_port}", *ca)
        self.assertEqual(a.log_count(r"redis: connected to 127\.0\.0\.1:\d+/0 \(TLS\)$"), 1)
        self.assertEqual(b.log_count(r"redis: connected to localhost:\d+/0 \(TLS\)$"), 1)
        self.assert_shared(a, b)

    def test_fork_mode_over_tls(self):
        # The parent holds the bridges; each client's child closes every descriptor it inherits.
        self.redis = tls_redis("--tls-auth-clients", "no")
        url = f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}"
        a = self.connected(url, "--redis-tls-ca", PKI.ca, "--serve", "fork")
        b = self.connected(url, "--redis-tls-ca", PKI.ca)
        self.assert_shared(a, b)
        self.assert_shared(b, a)

    def test_tls_redis_killed_and_restarted(self):
        self.redis = tls_redis("--tls-auth-clients", "no")
        url = f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}"
        a = self.connected(url, "--redis-tls-ca", PKI.ca)
        b = self.connected(url, "--redis-tls-ca", PKI.ca)
        one, two = self.client(a), self.client(b)
        one.skip_to(f"* {two.name} joined")
        port, tls_port = self.redis.port, self.redis.tls_port
        self.redis.close()
        one.expect(UNREACHABLE)
        two.skip_to(UNREACHABLE)
        a.wait_for_log(r"redis: lost 127\.0\.0\.1:\d+/0 \(TLS\): TLS: [^;]+; the room goes on",
                       timeout=SLOW)
        self.redis = tls_redis("--tls-auth-clients", "no", port=port, tls_port=tls_port)
        one.expect(BACK, timeout=SLOW)
        two.skip_to(BACK, timeout=SLOW)
        b.wait_for_log(r"redis: connected to", start=1)
        one.send("over TLS again\n")
        two.skip_to(f"[{one.name}]: over TLS again")

    def test_untrusted_certificate_keeps_the_local_room(self):
        self.redis = tls_redis("--tls-auth-clients", "no")
        # No --redis-tls-ca: the system's trust store, which knows nothing of the test CA.
        server = self.refused(f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}")
        self.assert_local_room_works(server, r"TLS: handshake failed: the certificate is not signed "
                                             r"by a trusted CA")

    def test_wrong_name_keeps_the_local_room(self):
        self.redis = tls_redis("--tls-auth-clients", "no")
        server = self.refused(f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}",
                              "--redis-tls-ca", PKI.ca, "--redis-tls-server-name", "other.test")
        self.assert_local_room_works(
            server, r"TLS: handshake failed: the certificate is not for host name 'other\.test'")

    def test_client_certificate(self):
        self.redis = tls_redis("--tls-auth-clients", "yes")
        url = f"rediss://:s3cret@127.0.0.1:{self.redis.tls_port}"
        ca = ["--redis-tls-ca", PKI.ca]
        self.refused(url, *ca)
        with_cert = ca + ["--redis-tls-cert", PKI.path("client.pem"),
                          "--redis-tls-key", PKI.path("client.key")]
        self.assert_shared(self.connected(url, *with_cert), self.connected(url, *with_cert))

    def test_plain_url_on_the_tls_port_is_refused(self):
        self.redis = tls_redis("--tls-auth-clients", "no")
        server = self.refused(f"redis://:s3cret@127.0.0.1:{self.redis.tls_port}")
        self.assertEqual(server.log_count(r"redis: cannot reach"), 1)

    def test_flag_errors(self):
        missing = os.path.join(PKI.dir, "missing.pem")
        cases = [
            (["--redis", "redis://127.0.0.1:1", "--redis-tls-ca", PKI.ca],
             "mux: error: --redis-tls-ca: needs --redis rediss://... (TLS)"),
            (["--redis-tls-server-name", "x"],
             "mux: error: --redis-tls-server-name: needs --redis rediss://... (TLS)"),
            (["--redis", "rediss://127.0.0.1:1", "--redis-tls-ca", missing],
             f"mux: error: --redis-tls-ca {missing}: "),
            (["--redis", "rediss://127.0.0.1:1", "--redis-tls-cert", PKI.path("client.pem")],
             "mux: error: --redis-tls-cert and --redis-tls-key: "),
        ]
        for args, message in cases:
            result = muxtest.run_mux("chat-server", "--port", "0", *args)
            lines = result.stderr.decode().splitlines()
            # Flags that contradict each other are usage errors (exit 2, with the hint); a file
            # that cannot be read is found when the server starts (exit 1).
            usage = "missing" not in message
            self.assertEqual(result.returncode, 2 if usage else 1, args)
            self.assertEqual(len(lines), 2 if usage else 1, lines)
            self.assertTrue(lines[0].startswith(message), lines)
            if usage:
                self.assertEqual(lines[1], "Try 'mux chat-server --help' for more information.")


if __name__ == "__main__":
    muxtest.main()
