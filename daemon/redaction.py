"""Free text on its way to disk (the journal, the persisted halt) with every registered secret redacted.

A halt reason is whatever the operator typed or an error said: it can carry a credential (a pasted key, a
venue error echoing a signed URL). The log redacts such values on every line (`daemon.log`); what is written
to the state directory must be redacted the same way, since it outlives the process and is read with `sqlite3`
or `cat`. Only free text goes through here — never numbers, which a short secret could corrupt.
"""

from __future__ import annotations

from daemon.log import redact_secrets

# Keys of a journaled body whose values are free text (an error's message, a venue's reason).
FREE_TEXT_KEYS = frozenset({"error", "reason", "detail", "message"})


def redact_text(text: str) -> str:
    """`text` with every registered secret replaced, as a log line would show it."""
    return str(redact_secrets(None, "", {"text": text})["text"])
