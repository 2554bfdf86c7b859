"""`.jsonl`: one document per line, its text in the `text` field.

Lines that are not JSON objects with a string `text` are skipped and counted as
bad_json_lines; blank lines are ignored.
"""

from __future__ import annotations

import json
from typing import Iterator

from mypt.readers.base import Reader, register
from mypt.text import DecodeCounter


@register
class JsonlReader(Reader):
    suffix = ".jsonl"
    one_document = False
    text_key = "text"

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        for chunk in self.chunks(start, end):
            for raw in chunk.splitlines():
                if not raw.strip():
                    continue
                stats["documents_in"] += 1
                try:
                    record = json.loads(decoder.decode(raw))
                except ValueError:
                    record = None
                text = record.get(self.text_key) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats["bad_json_lines"] += 1
                    continue
                yield text
