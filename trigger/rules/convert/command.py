"""`trigger convert FILE... [-o DIR]`: read the files, convert, write, report.

Without `-o`, the WorkflowTemplates and rules go to stdout as one YAML stream; with it,
into `DIR/workflowtemplates/`, `DIR/rules/` and `DIR/REPORT.md`. The report's lines go to
stderr either way. Exit 0 when at least one rule was made, 1 when a file cannot be read
or nothing could be converted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from trigger.rules.convert import InputError, convert, read_objects
from trigger.rules.convert.writer import documents, files, summary_lines


def run(paths: Sequence[str], output: str | None, out: TextIO, err: TextIO) -> int:
    objects = []
    for path in paths:
        try:
            objects.extend(read_objects(Path(path).read_text(encoding="utf-8"), path))
        except (OSError, UnicodeDecodeError, InputError) as exc:
            print(f"trigger: error: {exc}", file=err)
            return 1
    conversion = convert(objects)
    for line in summary_lines(conversion):
        print(line, file=err)
    if output is None:
        out.write(documents(conversion))
    else:
        root = Path(output)
        for name, text in files(conversion).items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    report_at = f"; report in {Path(output) / 'REPORT.md'}" if output else ""
    print(
        f"converted {len(conversion.converted)} object(s): {len(conversion.rules)} rule(s), "
        f"{len(conversion.templates)} WorkflowTemplate(s); {len(conversion.skipped)} not "
        f"converted{report_at}",
        file=err,
    )
    return 0 if conversion.rules else 1
