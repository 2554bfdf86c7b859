"""`.jsonl`: one document per line, its text in the `text` field (`--text_key` names another).

A line that is not JSON, not an object, or has no string text field is a bad record: skipped
and counted as bad_json_lines, the first one reported as file:line (with `--strict`, an error
there). Blank lines are ignored. Lines end at b"\\n" only, as editors number them. A UTF-8
byte-order mark at the start of the file (some Windows editors write one) is not part of the
first line: json.loads would refuse it and lose the first document.
"""

from __future__ import annotations

import json
from typing import Iterator

from mypt.readers.base import Reader, register
from mypt.text import DecodeCounter

BOM = b"\xef\xbb\xbf"


@register
class JsonlReader(Reader):
    suffix = ".jsonl"
    description = "one document per line in its `text` field"
    one_document = False

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        line = 0  # lines of the block before the current chunk
        for n, chunk in enumerate(self.chunks(start, end)):
            if n == 0 and start == 0:  # the file's first bytes
                chunk = chunk.removeprefix(BOM)
            for i, raw in enumerate(chunk.split(b"\n")):
                if not raw.strip():
                    continue
                stats["documents_in"] += 1
                try:
                    record = json.loads(decoder.decode(raw))
                except ValueError:
                    record, why = None, "not valid JSON"
                else:
                    why = "not a JSON object" if not isinstance(record, dict) else \
                        f"no string field {self.text_key!r} (--text_key names the field of the text)"
                text = record.get(self.text_key) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats["bad_json_lines"] += 1
                    self.bad_record(line + i + 1, why, start)
                    continue
                yield text
            line += chunk.count(b"\n")
