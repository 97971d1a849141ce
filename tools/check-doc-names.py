#!/usr/bin/env python3
"""Checks that the code names the design documents put in backquotes exist.

Every `name`, `name()`, `Type::member` or `Type::member(args)` in docs/DESIGN.md and
docs/SPEC.md must name an identifier found in the repository's own files (anything tracked
but Markdown, so a document cannot vouch for itself), or, for the names of the system and its
libraries (`open()`, `EIDRM`, `fuse_session_custom_io()`), in /usr/include; the few kernel
names they cite are listed below. A qualified name needs both parts in one file of the tree.
Comments of C and C++ sources do not count, nor does this file. A backquoted path into the
tree (`lib/region/door.hpp`, `server/fast_path.{hpp,cpp}`) must exist. Prose in backquotes
that is no code name (`--fuse-mount`, `0xBC 14`, `a b`) is not checked.

Usage: check-doc-names.py [REPOSITORY]   (exit 1 and a list when some name is missing)
"""
import glob
import os
import re
import subprocess
import sys

DOCS = ("docs/DESIGN.md", "docs/SPEC.md")
# Names inside the Linux kernel (not in /usr/include) that the documents cite as the reason for
# a decision: the kernel's, not ours, so nothing here can go stale with our code.
KERNEL_NAMES = {
    "ATOMIC_O_TRUNC", "FR_INTERRUPTED", "READ_ONCE", "complete_signal", "fuse_dev_do_write",
    "fuse_file_write_iter", "mqueue_evict_inode", "request_wait_answer",
    "rwsem_down_write_slowpath", "wait_event_interruptible", "zap_threads",
    "SYMR",  # not the kernel's: the region's magic (layout.hpp's kMagic), as its bytes read
}
CODE_NAME = re.compile(r"^((?:[A-Za-z_]\w*::)*)(~?[A-Za-z_]\w*)(\([^()]*\))?$")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
BACKQUOTED = re.compile(r"`([^`\n]+)`")


def tracked_files(root):
    listed = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True)
    if listed.returncode == 0:
        names = [name for name in listed.stdout.decode().split("\0") if name]
    else:  # not a git checkout (a source tarball): every file but build trees
        names = [os.path.relpath(os.path.join(directory, f), root)
                 for directory, dirs, files in os.walk(root)
                 if not os.path.relpath(directory, root).startswith(("build", ".git"))
                 for f in files]
    itself = os.path.relpath(os.path.abspath(__file__), root)
    return [os.path.join(root, name) for name in names
            if not name.endswith(".md") and name != itself]


C_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
C_SOURCES = (".c", ".cpp", ".h", ".hpp")


def identifiers_by_file(paths):
    """Identifiers per file; in C and C++ sources, outside comments (a comment cannot vouch)."""
    found = {}
    for path in paths:
        try:
            with open(path, "rb") as handle:
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        if path.endswith(C_SOURCES):
            text = C_COMMENT.sub(" ", text)
        found[path] = set(IDENTIFIER.findall(text))
    return found


# A backquoted path into the repository must exist (`server/fast_path.{hpp,cpp}` expands).
TOP_DIRS = ("lib", "server", "tests", "tools", "include", "docs", "benchmarks", "cli", "python",
            "packaging", "systemd", "udev", "man", "examples")
PATH = re.compile(r"^(?:%s)/[\w./{},*-]*$" % "|".join(TOP_DIRS))


def path_exists(root, span):
    braces = re.match(r"^(.*)\{([^}]*)\}(.*)$", span)
    if braces:
        return all(path_exists(root, braces.group(1) + part + braces.group(3))
                   for part in braces.group(2).split(","))
    return bool(glob.glob(os.path.join(root, span.rstrip("/"))))


def doc_names(root):
    """(document, line number, span, qualifiers, name) for every code name in backquotes."""
    for doc in DOCS:
        with open(os.path.join(root, doc), encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        # Paragraphs as a whole (a span may break across lines), outside code blocks.
        paragraph, first, in_block = [], 0, False
        for number, line in enumerate(lines + [""], 1):
            if line.startswith("```"):
                in_block = not in_block
                continue
            if in_block:
                continue
            if line.strip():
                if not paragraph:
                    first = number
                paragraph.append(line)
                continue
            for span in BACKQUOTED.findall(" ".join(paragraph)):
                span = re.sub(r"\s+", "", span) if "::" in span or "(" in span else span
                yield doc, first, span.strip()
            paragraph = []


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), ".."))
    tree = identifiers_by_file(tracked_files(root))
    everything = set().union(*tree.values())
    system = None  # read only when a name is not in the tree
    missing = []
    checked = 0
    for doc, number, span in doc_names(root):
        if PATH.match(span):
            checked += 1
            if not path_exists(root, span):
                missing.append(f"{doc}:{number}: `{span}` is no path in the tree")
            continue
        match = CODE_NAME.match(span)
        if not match:
            continue
        qualifiers = [part for part in match.group(1).split("::") if part]
        name = match.group(2).lstrip("~")
        checked += 1
        if not qualifiers and name in KERNEL_NAMES:
            continue
        if qualifiers:
            wanted = set(qualifiers) | {name}
            if any(wanted <= names for names in tree.values()):
                continue
        elif name in everything:
            continue
        if system is None:
            headers = []
            for directory, _, files in os.walk("/usr/include"):
                headers.extend(os.path.join(directory, f) for f in files)
            system = set().union(*identifiers_by_file(headers).values())
        if not qualifiers and name in system:
            continue
        missing.append(f"{doc}:{number}: `{span}` names nothing in the tree")
    for line in missing:
        print(line)
    print(f"check-doc-names: {checked} code names in {', '.join(DOCS)}, {len(missing)} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
