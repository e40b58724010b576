"""The Debian package, built for real: debian/ in a scratch copy of the source tree (dpkg-
buildpackage writes its output to the parent directory, so never next to the checkout), in the
fast mode (DEB_BUILD_OPTIONS="nocheck parallel=2 noautodbgsym": no unit tests compiled, no
-dbgsym package). Then the .deb's file list, its conffiles and maintainer scripts, lintian (no
error and no warning that is not overridden with a reason), and the binary extracted into a
scratch root run with the config file the package ships.

Slow (a full compile; minutes on a loaded 2-core machine, less when ccache already has the
objects): it prints its build time and the package size."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import muxtest

SOURCE_ROOT = os.environ.get(
    "MUX_SOURCE_ROOT", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TOOLS = ["dpkg-buildpackage", "dh", "dpkg-deb", "lintian"]
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
BUILD_TIMEOUT = 1500

EXPECTED_FILES = [
    "/usr/bin/mux",
    "/usr/share/man/man1/mux.1.gz",
    "/usr/share/bash-completion/completions/mux",
    "/usr/share/zsh/vendor-completions/_mux",
    "/lib/systemd/system/mux-chat.service",
    "/lib/systemd/system/mux-chat.socket",
    "/lib/systemd/system/mux-upload.service",
    "/lib/systemd/system/mux-upload.socket",
    "/lib/systemd/system/mux-chat@.service",
    "/lib/systemd/system/mux-chat@.socket",
    "/lib/systemd/system/mux-upload@.service",
    "/lib/systemd/system/mux-upload@.socket",
    "/etc/mux/chat-default.conf",
    "/etc/mux/upload-default.conf",
    "/usr/share/doc/mux/copyright",
    "/usr/share/doc/mux/changelog.gz",
    "/usr/share/lintian/overrides/mux",
]


def source_files():
    """The files of the checkout as git sees them (tracked, and new ones not ignored), so a
    build directory or editor litter never reaches the package's source."""
    listed = subprocess.run(["git", "-C", SOURCE_ROOT, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True, timeout=60)
    return [name for name in listed.stdout.decode().split("\0")
            if name and os.path.isfile(os.path.join(SOURCE_ROOT, name))]


def meson_version():
    with open(os.path.join(SOURCE_ROOT, "meson.build")) as f:
        return re.search(r"version: '([^']+)'", f.read()).group(1)


class ExtractedServer(muxtest.Server):
    """The packaged binary run as given (muxtest.Server runs the build's own)."""

    def __init__(self, command):
        self.args = command
        self.host = muxtest.HOST
        self.collect(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL))
        self.port = int(self.wait_for_log(r"listening on (\S+):(\d+)").group(2))


@unittest.skipIf(MISSING and os.environ.get("CI") != "true",
                 f"not installed: {', '.join(MISSING)} (.ci/setup installs them)")
@unittest.skipIf(muxtest.built_with_sanitizers(),
                 "the package is built once, by the plain build's pass (CI's sanitizer pass "
                 "would compile the same package again)")
class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="mux-package-e2e-")
        version = meson_version()
        tree = os.path.join(cls.work, f"mux-{version}")
        for name in source_files():
            target = os.path.join(tree, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(os.path.join(SOURCE_ROOT, name), target)
        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2 noautodbgsym")
        # debhelper (compat 13) points HOME at a scratch directory, where ccache would find an
        # empty cache: name the real one, and let it hit across scratch paths.
        ccache_dir = os.environ.get("CCACHE_DIR") or os.path.expanduser("~/.cache/ccache")
        if os.path.isdir(ccache_dir):
            env.update(CCACHE_DIR=ccache_dir, CCACHE_BASEDIR=cls.work, CCACHE_NOHASHDIR="1")
        start = time.monotonic()
        cls.build = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=tree, env=env,
                                   capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        cls.build_seconds = time.monotonic() - start
        cls.deb = os.path.join(cls.work, f"mux_{version}_amd64.deb")
        cls.version = version

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, ignore_errors=True)

    def setUp(self):
        self.assertEqual(self.build.returncode, 0,
                         "dpkg-buildpackage failed:\n" + self.build.stdout[-4000:] +
                         self.build.stderr[-4000:])
        self.assertTrue(os.path.isfile(self.deb), os.listdir(self.work))

    def dpkg_deb(self, *args):
        return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True,
                              timeout=60).stdout

    def test_0_build_time_and_size(self):
        size = os.path.getsize(self.deb)
        print(f"\npackage: {os.path.basename(self.deb)}, {size} bytes, built in "
              f"{self.build_seconds:.0f} s", file=sys.stderr)
        self.assertEqual(self.dpkg_deb("--field", self.deb, "Version").strip(), self.version)
        self.assertEqual(self.dpkg_deb("--field", self.deb, "Package").strip(), "mux")
        # Only the one package: nocheck and noautodbgsym leave no -dbgsym beside it.
        self.assertEqual(sorted(n for n in os.listdir(self.work) if n.endswith(".deb")),
                         [os.path.basename(self.deb)])

    def test_file_list(self):
        listing = self.dpkg_deb("--contents", self.deb)
        paths = set()
        for line in listing.splitlines():
            path = line.split(None, 5)[5].split(" -> ")[0]
            paths.add(path[1:].rstrip("/") if path.startswith(".") else path)
        for expected in EXPECTED_FILES:
            self.assertIn(expected, paths)
        # Nothing of the build or test machinery, and no second license file.
        for path in paths:
            self.assertFalse(re.search(r"LICENSE$|\.a$|unit_tests|/include/", path), path)
        mode = [line for line in listing.splitlines() if line.endswith(" ./usr/bin/mux")][0]
        self.assertTrue(mode.startswith("-rwxr-xr-x root/root"), mode)

    def test_conffiles_and_maintainer_scripts(self):
        control = os.path.join(self.work, "control")
        self.dpkg_deb("--control", self.deb, control)
        with open(os.path.join(control, "conffiles")) as f:
            self.assertEqual(sorted(f.read().split()),
                             ["/etc/mux/chat-default.conf", "/etc/mux/upload-default.conf"])
        with open(os.path.join(control, "postinst")) as f:
            postinst = f.read()
        self.assertRegex(postinst, r"(?s)\n    adduser --system --group .*? mux\nfi\n")
        # Not enabled on install (dh_installsystemd --no-enable): each unit is enabled again
        # only where an earlier install had it enabled ("debian-installed"), never afresh.
        self.assertEqual(postinst.count("deb-systemd-helper enable"), 4)
        self.assertEqual(postinst.count("deb-systemd-helper debian-installed"), 4)
        depends = self.dpkg_deb("--field", self.deb, "Depends")
        self.assertIn("adduser", depends)

    def test_lintian_has_no_errors_and_no_unexplained_warnings(self):
        result = subprocess.run(["lintian", "--fail-on", "error,warning", "--display-level",
                                 ">=warning", "--show-overrides", self.deb],
                                capture_output=True, text=True, timeout=600)
        complaints = [line for line in result.stdout.splitlines()
                      if re.match(r"^[EW]: ", line)]
        self.assertEqual((result.returncode, complaints), (0, []),
                         result.stdout + result.stderr)

    def test_the_extracted_binary_runs_with_the_shipped_config(self):
        root = os.path.join(self.work, "root")
        self.dpkg_deb("--extract", self.deb, root)
        binary = os.path.join(root, "usr", "bin", "mux")
        config = os.path.join(root, "etc", "mux", "chat-default.conf")
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=30)
        self.assertEqual((version.returncode, version.stdout), (0, f"mux {self.version}\n"))
        check = subprocess.run([binary, "chat-server", "--config", config, "--check"],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual((check.returncode, check.stdout, check.stderr),
                         (0, f"mux chat-server: configuration ok (flags and {config})\n", ""))
        upload_config = os.path.join(root, "etc", "mux", "upload-default.conf")
        out = os.path.join(self.work, "uploads")
        os.mkdir(out)
        check = subprocess.run([binary, "upload-server", "--config", upload_config,
                                "--output-dir", out, "--check"],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stderr)
        # Served for real: the shipped file's settings (host 127.0.0.1), --port 0 on the command
        # line winning over its port = 7000.
        with ExtractedServer([binary, "chat-server", "--config", config, "--port", "0"]) as server:
            self.assertRegex(server.stdout_lines[0],
                             r"listening on 127\.0\.0\.1:\d+ \(serve single\)")
            self.assertNotEqual(server.port, 7000)
            with server.connect() as sock:
                self.assertRegex(muxtest.LineReader(sock).line(), r"^\* welcome, you are Client 1 ")
            self.assertEqual(server.stop(), 0)
        # The man page and the completions are the ones for this binary.
        with open(os.path.join(root, "usr", "share", "bash-completion", "completions", "mux")) as f:
            self.assertIn("--config", f.read())
        man = subprocess.run(["mandoc", "-T", "ascii",
                              os.path.join(root, "usr", "share", "man", "man1", "mux.1.gz")],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(man.returncode, 0, man.stderr)
        self.assertIn("CONFIGURATION FILES", re.sub(r".\x08", "", man.stdout))


if __name__ == "__main__":
    muxtest.main()
