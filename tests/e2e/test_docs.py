"""The README's shell examples and the man page's EXAMPLES cannot drift from the program: every
block of commands is taken from the documents as written and run on loopback, in a scratch
directory that is also $HOME, with each documented port mapped to a free one. Servers must start
and end cleanly on SIGTERM, clients must exit 0, socat and xxhsum must succeed. A command that
cannot run here (a placeholder such as `sha256:...`, a remote host, Redis, systemd, an interactive
openssl or ncat) is skipped, and the test says how many ran, so a document that loses its
runnable examples fails too."""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import muxtest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
README = os.path.join(ROOT, "README.md")
MAN_PAGE = os.environ.get("MUX_MAN_PAGE", os.path.join(ROOT, "man", "mux.1"))
SERVERS = ("chat-server", "upload-server")
TIMEOUT = muxtest.DEFAULT_TIMEOUT


def free_port():
    with socket.socket() as s:
        s.bind((muxtest.HOST, 0))
        return s.getsockname()[1]


def readme_blocks():
    with open(README, encoding="utf-8") as f:
        blocks = re.findall(r"```[a-z]*\n(.*?)```", f.read(), re.S)
    # A trailing backslash continues the command on the next line, as in a shell.
    return [block.replace("\\\n", " ").splitlines() for block in blocks]


def man_blocks():
    """The .EX/.EE and .nf/.fi blocks of the EXAMPLES and TLS sections, un-roffed."""
    with open(MAN_PAGE, encoding="utf-8") as f:
        source = f.read()
    blocks = []
    for raw in re.findall(r"^\.(?:EX|nf)\n(.*?)^\.(?:EE|fi)\n", source, re.S | re.M):
        text = (raw.replace(r"\-", "-").replace(r"\(aq", "'").replace(r"\(dq", '"')
                .replace(r"\en", "\\n").replace(r"\e", "\\"))
        # A trailing backslash continues the command on the next line, as in a shell.
        blocks.append(text.replace("\\\n", " ").splitlines())
    return blocks


class Block:
    """One block of documented commands, run in order in a scratch directory."""

    def __init__(self, test, lines):
        self.test = test
        self.lines = lines
        self.home = tempfile.mkdtemp(prefix="mux-docs-")
        self.env = dict(os.environ, HOME=self.home)
        self.ports = {}
        self.servers = []
        self.ran = 0

    def port(self, documented):
        return self.ports.setdefault(str(documented), free_port())

    def fixtures(self, args):
        """Files the commands name and a reader would have: certificates, a token file, the
        file to upload, the output directory (the man page's test checks it is made first)."""
        for flag, value in zip(args, args[1:]):
            path = os.path.join(self.home, value)
            if flag in ("--tls-cert", "--tls-key", "--tls-ca") and not os.path.exists(path):
                self.make_certificate()
            elif flag == "--token-file" and not os.path.exists(path):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                    f.write("s3cret-token-0123\n")
            elif flag == "--file" and value != "-" and not os.path.exists(path):
                with open(path, "wb") as f:
                    f.write(b"documented upload\n")
            elif flag == "--output-dir":
                os.makedirs(path, exist_ok=True)

    def make_certificate(self):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj",
             "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            cwd=self.home, check=True, capture_output=True, timeout=30)

    def expand(self, args):
        return [os.path.join(self.home, a[2:]) if a.startswith("~/") else a for a in args]

    def mux_args(self, args):
        """The documented arguments with the port mapped and the host kept on loopback; None
        when the command cannot run here."""
        sub = args[0]
        if any("..." in a or "example.org" in a or a.startswith("redis") or
               (a.startswith("/") and not a.startswith(self.home)) for a in args):
            return None
        if "--redis" in args or "--host" in args and args[args.index("--host") + 1] not in (
                "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"):
            return None
        args = list(args)
        if "--host" in args and args[args.index("--host") + 1] in ("0.0.0.0", "::"):
            args[args.index("--host") + 1] = "127.0.0.1"  # every interface, tried on loopback
        if "--port" in args:
            args[args.index("--port") + 1] = str(self.port(args[args.index("--port") + 1]))
        else:
            args += ["--port", str(self.port(5000))]
        if sub not in SERVERS and ("--tls" in args or "--tls-ca" in args) and "--host" not in args:
            args += ["--host", "localhost"]  # the fixture certificate's name
        return args

    def run_line(self, line):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            return  # prose, not a command (an apostrophe)
        if not words:
            return
        background = words[-1] == "&"
        if background:
            words = words[:-1]
        stdin = None
        if "|" in words:
            cut = words.index("|")
            left, words = words[:cut], words[cut + 1:]
            if left[0] not in ("printf", "tar", "seq", "echo"):
                return
            if left[0] == "tar":
                os.makedirs(os.path.join(self.home, "notes"), exist_ok=True)
            stdin = subprocess.run(left, cwd=self.home, env=self.env, capture_output=True,
                                   check=True, timeout=TIMEOUT).stdout
        if words[0] in ("./build/mux", "mux") and len(words) > 1:
            return self.run_mux(self.expand(words[1:]), stdin)
        if words[0] in ("mkdir", "seq", "xxhsum"):
            return self.run_shell(line)
        if words[0] == "socat" and "OPENSSL-LISTEN" not in line:
            return self.run_socat(words)

    def run_shell(self, line):
        result = subprocess.run(["bash", "-c", line], cwd=self.home, env=self.env,
                                capture_output=True, timeout=TIMEOUT)
        self.test.assertEqual(result.returncode, 0, f"{line}: {result.stderr!r}")
        self.ran += 1

    def run_socat(self, words):
        mapped = []
        for word in words:
            match = re.match(r"^(TCP|OPENSSL):([^:]+):(\d+)(.*)$", word)
            if match:
                if not self.serving(self.port(match.group(3))):
                    return  # nothing documented listens there in this block
                word = f"{match.group(1)}:{match.group(2)}:{self.port(match.group(3))}{match.group(4)}"
            mapped.append(word)
        if "<" in mapped:
            cut = mapped.index("<")
            with open(os.path.join(self.home, mapped[cut + 1]), "rb") as f:
                data = f.read()
            mapped = mapped[:cut]
        else:
            data = b""
        self.fixtures(["--file"] + [w.split(":", 1)[1].split(",")[0] for w in mapped
                                    if w.startswith("FILE:")])
        result = subprocess.run(mapped, cwd=self.home, env=self.env, input=data,
                                capture_output=True, timeout=TIMEOUT)
        self.test.assertEqual(result.returncode, 0, f"{mapped}: {result.stderr!r}")
        self.ran += 1

    def run_mux(self, args, stdin):
        args = self.mux_args(args)
        if args is None:
            return
        self.fixtures(args)
        if args[0] in SERVERS:
            self.servers.append(DocumentedServer(args, self.home, self.env))
        elif not self.serving(args[args.index("--port") + 1]):
            return  # a client with no documented server in its block: nothing to talk to
        else:
            result = subprocess.run([muxtest.MUX, *args], cwd=self.home, env=self.env,
                                    input=stdin or b"", capture_output=True, timeout=TIMEOUT)
            self.test.assertEqual(result.returncode, 0, f"mux {shlex.join(args)}: "
                                                        f"{result.stderr.decode()!r}")
        self.ran += 1

    def serving(self, port):
        return any(server.port == int(port) for server in self.servers)

    def finish(self):
        try:
            for server in self.servers:
                self.test.assertEqual(server.stop(), 0, server.stderr_lines)
                self.test.assertEqual(server.stderr_lines, [], server.args)
        finally:
            for server in self.servers:
                server.stop()
            shutil.rmtree(self.home, ignore_errors=True)


class DocumentedServer(muxtest.Server):
    """A server started with the documented arguments as they are (the port already mapped)."""

    def __init__(self, args, cwd, env):
        self.args = [muxtest.MUX, *args]
        self.collect(subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, cwd=cwd, env=env))
        try:
            match = self.wait_for_log(r"listening on (\S+):(\d+)")
        except BaseException:
            self.stop()
            raise
        self.port = int(match.group(2))
        self.host = muxtest.HOST


class DocsTest(unittest.TestCase):
    def run_blocks(self, blocks):
        ran = 0
        for lines in blocks:
            block = Block(self, lines)
            with self.subTest(block=lines):
                try:
                    for line in lines:
                        block.run_line(line)
                finally:
                    block.finish()
            ran += block.ran
        return ran

    def test_readme_examples_run(self):
        # At least the quick start, TLS, tokens and pins blocks have runnable commands.
        self.assertGreaterEqual(self.run_blocks(readme_blocks()), 8)

    def test_man_examples_run(self):
        self.assertGreaterEqual(self.run_blocks(man_blocks()), 10)


if __name__ == "__main__":
    muxtest.main()
