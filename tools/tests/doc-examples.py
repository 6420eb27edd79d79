#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The documentation's code examples are real code: check that they still are.

Examples live in compiled sources (samples/kmalloc43_client/doc_examples.rs, run by the sample
client's KUnit suite; samples/kmalloc43_c_client.c, run at its init) between markers
``doc:<name>-begin`` and ``doc:<name>-end``.

* Documentation/*.rst include them with ``literalinclude`` (``:start-after: doc:<name>-begin``,
  ``:end-before: doc:<name>-end``): each such pair must name a region that exists once.
* README.md quotes them: a fenced block right after a line
  ``<!-- doc-example: <file> <name> [<name>...] -->`` must equal those regions, dedented and
  joined by a blank line.

Exit 1, naming each mismatch, when an example has drifted from the code.
"""
import pathlib
import re
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
errors = []


def region(path, name):
    text = (ROOT / path).read_text()
    begin, end = f"doc:{name}-begin", f"doc:{name}-end"
    if text.count(begin) != 1 or text.count(end) != 1:
        errors.append(f"{path}: region '{name}' must have one begin and one end marker")
        return None
    body = text.split(begin, 1)[1].split("\n", 1)[1]
    body = body.split(end, 1)[0].rsplit("\n", 1)[0]
    return textwrap.dedent(body).strip("\n")


def check_readme():
    lines = (ROOT / "README.md").read_text().split("\n")
    quoted = 0
    for i, line in enumerate(lines):
        m = re.match(r"<!-- doc-example: (\S+) (.+?) -->$", line.strip())
        if not m:
            continue
        quoted += 1
        path, names = m.group(1), m.group(2).split()
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            errors.append(f"README.md:{i + 1}: doc-example marker not followed by a code block")
            continue
        end = next((j for j in range(i + 2, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            errors.append(f"README.md:{i + 2}: unterminated code block")
            continue
        block = "\n".join(lines[i + 2:end]).strip("\n")
        parts = [region(path, n) for n in names]
        if None in parts:
            continue
        want = "\n\n".join(parts)
        if block != want:
            errors.append(f"README.md:{i + 2}: code block differs from {path} {' '.join(names)}")
    return quoted


def check_rst():
    included = 0
    for rst in sorted((ROOT / "Documentation").glob("*.rst")):
        text = rst.read_text()
        for m in re.finditer(r"\.\. literalinclude:: (\S+)\n((?:\s+:.*\n)*)", text):
            opts = dict(re.findall(r":([\w-]+):\s*(.*)", m.group(2)))
            path = (rst.parent / m.group(1)).resolve().relative_to(ROOT)
            if not (ROOT / path).exists():
                errors.append(f"{rst.name}: literalinclude of missing {path}")
                continue
            after, before = opts.get("start-after", ""), opts.get("end-before", "")
            b = re.fullmatch(r"doc:(.+)-begin", after)
            if not b or before != f"doc:{b.group(1)}-end":
                errors.append(f"{rst.name}: literalinclude of {path} without a doc: region")
                continue
            included += 1
            region(path, b.group(1))
    return included


quoted, included = check_readme(), check_rst()
for e in errors:
    print(f"doc-examples: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"doc-examples: {quoted} README quotes and {included} Documentation includes match the code")
