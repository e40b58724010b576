"""The folder dependencies ARCHITECTURE.md fixes, checked on the sources: main -> cli -> chat, upload ->
core. Only cli/ includes CLI11; chat/ and upload/ never include cli/; core/ includes nothing of
chat/, upload/ or cli/; chat/ and upload/ do not include each other."""

import os
import re
import sys
import unittest

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^">]+)[">]', re.M)

# folder -> folders (or the CLI11 header prefix) it must never include
FORBIDDEN = {
    "core": ["chat/", "upload/", "cli/", "CLI/"],
    "chat": ["upload/", "cli/", "CLI/"],
    "upload": ["chat/", "cli/", "CLI/"],
    "cli": [],
}


def includes_of(folder):
    root = os.path.join(SRC, folder)
    for name in sorted(os.listdir(root)):
        if name.endswith((".cpp", ".hpp")):
            with open(os.path.join(root, name), encoding="utf-8") as source:
                for included in INCLUDE.findall(source.read()):
                    yield f"{folder}/{name}", included


class LayeringTest(unittest.TestCase):
    def test_folders_depend_one_way(self):
        for folder, forbidden in FORBIDDEN.items():
            for path, included in includes_of(folder):
                for prefix in forbidden:
                    with self.subTest(path=path, included=included):
                        self.assertFalse(included.startswith(prefix), f"{path} includes {included}")

    def test_only_cli_includes_cli11(self):
        users = {path for folder in FORBIDDEN for path, included in includes_of(folder)
                 if included.startswith("CLI/")}
        self.assertTrue(users, "nothing includes CLI11 at all?")
        self.assertTrue(all(path.startswith("cli/") for path in users), users)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
