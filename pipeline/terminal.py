"""Text that others wrote (a registry's manifests, a decision record, an S3 key), made safe to print.

A manifest is whatever its publisher, or anyone with write access to the bucket, put there. Printed as it
is, an escape sequence in it is a command to the reader's terminal: clear the screen, recolour or hide
text, an OSC 8 hyperlink whose target is not the text shown, a carriage return or newline that writes over
a line or forges a table row. So every command prints such text through `printable`, which shows each
control character as `\\xNN` (or `\\uNNNN`) instead. `--json` output needs none of this: json.dumps
escapes every C0 character, and with its default ensure_ascii every C1 one as well (as `\\u009b`).
"""

from __future__ import annotations

import re

# C0 (0x00-0x1f), DEL and C1 (0x80-0x9f: 8-bit CSI 0x9b and OSC 0x9d among them): Unicode's Cc, all of it.
# And the bidirectional embeddings, overrides and isolates, which reorder the text a terminal shows.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """str(value) on one line, with every control character shown as an escape instead of sent to a terminal."""
    return _CONTROL.sub(_escape, str(value))
