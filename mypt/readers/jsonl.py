"""`.jsonl`: one document per line, its text in the `text` field (`--text_key` names another).

A line that is not JSON, not an object, or has no string text field is a bad record: skipped
and counted as bad_json_lines, the first one reported as file:line (with `--strict`, an error
there). Blank lines are ignored. Lines end at b"\\n" only, as editors number them. A UTF-8
byte-order mark at the start of the file (some Windows editors write one) is not part of the
first line: json.loads would refuse it and lose the first document.

`.json` is read the same way when it is JSON Lines, what `datasets`' `Dataset.to_json` writes
by default. A `.json` that is one JSON document (an array, or an object spread over lines) is
an error naming the file: reading it would take the whole file in memory at once, and a
corpus is converted once (`jq -c '.[]' X.json > X.jsonl`). A directory walk does not pick
`.json` files up (they are as often metadata, as manifest.json): name them or a glob.
"""

from __future__ import annotations

import json
import re
from typing import Iterator

from mypt.errors import InputError
from mypt.readers.base import BOM, Reader, register
from mypt.text import DecodeCounter, display_name

SNIFF_BYTES = 1 << 20  # where the first line of a .json is looked for
# A lone surrogate escape in a JSON string ("\\udc80", scraped text): json.loads keeps it, no
# UTF-8 can hold it, and the clean step's write failed with a traceback. (A pair is one
# character: json.loads joins it.)
_SURROGATE = re.compile("[\ud800-\udfff]")
# A bad record's reason where json.loads gives up on the depth (RecursionError), not the syntax.
NESTED = "nested deeper than JSON is read (arrays or objects inside each other, about 1,000 levels)"


@register
class JsonlReader(Reader):
    suffix = ".jsonl"
    description = "one document per line in its `text` field"
    one_document = False
    counters = (*Reader.counters, "documents_in", "bad_json_lines")
    long_line_hint = "split the document into several records (lines)"

    def texts(self, start: int, end: int, decoder: DecodeCounter, stats) -> Iterator[str]:
        line = 0  # lines of the block before the current chunk
        for n, chunk in enumerate(self.chunks(start, end, stats)):
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
                except RecursionError:  # (json.loads recurses per level: about 1,000 levels pass Python's limit)
                    record, why = None, NESTED
                else:
                    why = "not a JSON object" if not isinstance(record, dict) else \
                        f"its {self.text_key!r} is null" if record.get(self.text_key, "") is None else \
                        f"no string field {self.text_key!r} (--text_key names the field of the text)"
                text = record.get(self.text_key) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    stats["bad_json_lines"] += 1
                    self.bad_record(line + i + 1, why, start)
                    continue
                if _SURROGATE.search(text):  # replaced as invalid UTF-8 is, and counted with it
                    text, n = _SURROGATE.subn("\ufffd", text)
                    decoder.replaced += n
                yield text
            line += chunk.count(b"\n")


@register
class JsonReader(JsonlReader):
    suffix = ".json"
    description = "JSON Lines (Dataset.to_json; read when named, a directory walk skips it)"
    walked = False

    def blocks(self) -> list[tuple[int, int]]:
        self._check_lines()
        return super().blocks()

    def _check_lines(self) -> None:
        """An InputError when the file is one JSON document, not JSON Lines: it opens with
        `[`, or its first line is an opening `{` that does not parse on its own (pretty-printed).
        A first line longer than SNIFF_BYTES is left to the reader (a long document)."""
        with self.open() as f:
            head = f.read(SNIFF_BYTES).removeprefix(BOM).lstrip()
        first, newline, _ = head.partition(b"\n")
        if head.startswith(b"["):
            what = "one JSON array"
        elif head.startswith(b"{") and newline and not _parses(first):
            what = "one JSON object over several lines"
        else:
            return
        raise InputError(f"{display_name(self.path)} is {what}, not JSON Lines (one document a line, as "
                         "Dataset.to_json writes by default): mypt does not read a whole JSON file into memory; "
                         "write it as JSON Lines (an array: jq -c '.[]' FILE > FILE.jsonl) and pass that")


def _parses(line: bytes) -> bool:
    """The line is a JSON value on its own, or nested too deep to tell (RecursionError: no sign of
    a document spread over lines; the reader counts it as a bad line)."""
    try:
        json.loads(line)
    except ValueError:
        return False
    except RecursionError:
        return True
    return True
