"""What `meson install` puts on a machine, installed into a temporary --destdir: exactly the
binary (stripped), the man page, the bash and zsh completions, the systemd units, LICENSE and
NEWS. The completions are generated from the flag table: for every subcommand they offer exactly
the flags `mux SUB --help` lists, and the installed bash script completes in a real bash."""

import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import muxtest

BUILD_ROOT = os.environ.get("MUX_BUILD_ROOT", "")
SUBCOMMANDS = ["chat-server", "chat-client", "upload-server", "upload-client"]


def help_flags(sub):
    text = subprocess.run([muxtest.MUX, sub, "--help"], capture_output=True, text=True,
                          timeout=30, check=True).stdout
    flags = set()
    for line in text.splitlines():  # "  -v, --verbose ...", "  --port PORT ..."
        match = re.match(r"^\s+((?:-\w,\s*)?--[\w-]+)", line)
        if match:
            flags.update(name.strip() for name in match.group(1).split(","))
    return flags


@unittest.skipUnless(BUILD_ROOT, "MUX_BUILD_ROOT not set (run through meson test)")
class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.destdir = tempfile.mkdtemp(prefix="mux-install-e2e-")
        subprocess.run(["meson", "install", "-C", BUILD_ROOT, "--destdir", cls.destdir,
                        "--no-rebuild", "--quiet"], check=True, capture_output=True, timeout=120)
        options = json.loads(subprocess.run(["meson", "introspect", BUILD_ROOT, "--buildoptions"],
                                            check=True, capture_output=True, text=True).stdout)
        cls.option = {entry["name"]: entry["value"] for entry in options}
        cls.prefix = cls.destdir + cls.option["prefix"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.destdir, ignore_errors=True)

    def installed(self, relative):
        return os.path.join(self.prefix, relative)

    def test_the_file_list(self):
        found = sorted(os.path.relpath(os.path.join(root, name), self.prefix)
                       for root, _, names in os.walk(self.destdir) for name in names)
        unit_dir = self.option["systemdunitdir"] or "lib/systemd/system"
        # <sysconfdir>/mux: etc/mux under the prefix, or /etc/mux when sysconfdir is absolute.
        sysconf = self.option["sysconfdir"]
        conf_root = self.destdir + (sysconf if os.path.isabs(sysconf)
                                    else os.path.join(self.option["prefix"], sysconf))
        configs = [os.path.relpath(os.path.join(conf_root, "mux", name), self.prefix)
                   for name in ["chat-default.conf", "upload-default.conf"]]
        self.assertEqual(found, sorted(configs + [
            "bin/mux",
            os.path.join(unit_dir, "mux-chat.service"),
            os.path.join(unit_dir, "mux-chat.socket"),
            os.path.join(unit_dir, "mux-upload.service"),
            os.path.join(unit_dir, "mux-upload.socket"),
            os.path.join(unit_dir, "mux-chat@.service"),
            os.path.join(unit_dir, "mux-chat@.socket"),
            os.path.join(unit_dir, "mux-upload@.service"),
            os.path.join(unit_dir, "mux-upload@.socket"),
            "share/bash-completion/completions/mux",
            "share/doc/mux/LICENSE",
            "share/doc/mux/NEWS.md",
            "share/man/man1/mux.1",
            "share/zsh/vendor-completions/_mux",
        ]))
        with open(self.installed("share/doc/mux/LICENSE")) as f:
            self.assertTrue(f.readline().startswith("MIT License"))  # as meson.build declares
        with open(os.path.join(self.installed(unit_dir), "mux-chat.service")) as f:
            self.assertIn(f"\nExecStart={self.option['prefix']}/bin/mux chat-server ", f.read())
        with open(os.path.join(self.installed(unit_dir), "mux-chat@.service")) as f:
            self.assertIn(f"\nExecStart={self.option['prefix']}/bin/mux chat-server --config "
                          f"{os.path.normpath(conf_root[len(self.destdir):])}/mux/chat-%i.conf\n",
                          f.read())

    def test_the_binary_is_stripped_and_runs(self):
        binary = self.installed("bin/mux")
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        self.assertEqual((version.returncode, version.stdout.split()[0]), (0, "mux"))
        if not self.option["strip"]:
            self.skipTest("this build dir predates strip=true in meson.build (meson setup --wipe)")
        sections = subprocess.run(["readelf", "-S", binary], capture_output=True, text=True,
                                  check=True).stdout
        self.assertNotIn(".symtab", sections)
        self.assertNotIn(".debug_info", sections)

    def bash_complete(self, *words):
        """COMPREPLY after sourcing the installed script, with the cursor on the last word."""
        script = ("source \"$1\"; shift; COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); _mux; "
                  "printf '%s\\n' \"${COMPREPLY[@]}\"")
        result = subprocess.run(["bash", "--norc", "--noprofile", "-c", script, "bash",
                                 self.installed("share/bash-completion/completions/mux"), *words],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(result.stderr, "")
        return [line for line in result.stdout.splitlines() if line]

    def test_bash_completes_subcommands_flags_and_values(self):
        self.assertEqual(self.bash_complete("mux", "upl"), ["upload-server", "upload-client"])
        self.assertEqual(self.bash_complete("mux", "chat-server", "--max-q"), ["--max-queue"])
        self.assertEqual(self.bash_complete("mux", "upload-server", "--serve", ""),
                         ["single", "fork"])
        self.assertEqual(self.bash_complete("mux", "chat-server", "--log-level", "w"), ["warning"])
        self.assertEqual(self.bash_complete("mux", "upload-client", "--port", ""), [])

    def test_completions_offer_exactly_the_flags_of_help(self):
        with open(self.installed("share/bash-completion/completions/mux")) as f:
            bash = f.read()
        with open(self.installed("share/zsh/vendor-completions/_mux")) as f:
            zsh = f.read()
        self.assertTrue(zsh.startswith("#compdef mux\n"))
        for sub in SUBCOMMANDS:
            with self.subTest(subcommand=sub):
                expected = help_flags(sub)
                offered = self.bash_complete("mux", sub, "-")
                self.assertEqual(set(offered), expected)
                arm = re.search(rf"\n    {sub}\)\n      _arguments -s \\\n(.*?) ;;\n", zsh, re.S)
                self.assertIsNotNone(arm, zsh)
                zsh_flags = set()
                for spec in arm.group(1).splitlines():  # '(-v --verbose)'{...}'[...]' or '--port[...]'
                    match = re.match(r"^\s+'(?:\(([^)]*)\)|\*?(--?[\w-]+)\[)", spec)
                    self.assertIsNotNone(match, spec)
                    zsh_flags.update((match.group(1) or match.group(2)).split())
                self.assertEqual(zsh_flags, expected)
        if shutil.which("zsh"):
            result = subprocess.run(["zsh", "-n", self.installed("share/zsh/vendor-completions/_mux")],
                                    capture_output=True, text=True, timeout=30)
            self.assertEqual((result.returncode, result.stderr), (0, ""))


if __name__ == "__main__":
    muxtest.main()
