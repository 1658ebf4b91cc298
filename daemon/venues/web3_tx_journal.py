"""The transaction journal: every signed attempt the wallet sent, durable before its bytes leave, until it is settled.

`TxSender` (daemon/venues/web3_tx.py) hands each `SentTx` to `record` before broadcasting it, and settles it here
once its outcome was handed to a caller: `mined` (the attempt that is in a block; the others at its nonce become
`replaced`), `nonce_used` (another transaction used the nonce: none of ours can land), `refused` (the node refused
these very bytes outright: they never were in a pool). Whatever is still `in_flight` at start-up is what the last
process had sent and not seen through — `TxSender.recover()` looks each up by hash and nonce before it sends anything
new, so a restart neither loses nor repeats a transaction.

Why a file of its own and not a table of `daemon/journal.py`: that journal is per run (each row belongs to a run and
is read back within it) and swallows write errors (a failed append halts trading but the books go on). Here a failed
write must stop the broadcast — a transaction the journal did not see could be repeated after a crash — so `record`
raises, and the records outlive runs. The discipline is the same: SQLite in WAL mode, `synchronous=FULL`, autocommit
(each write is on disk when the call returns). The file may sit beside the daemon's journal under
`runtime.state_dir`.

`raw` is the signed transaction (no key: signing happened before) and round-trips byte for byte; on reading, its
keccak must be its hash, so a damaged record is refused rather than rebroadcast. Amounts and fees are decimal strings
(a wei value does not fit SQLite's 64-bit integers).
"""

from __future__ import annotations

import json
import sqlite3
import time
from enum import Enum
from pathlib import Path
from typing import Any, cast

from eth_utils.crypto import keccak
from hexbytes import HexBytes

from daemon.errors import FatalVenueError
from daemon.venues.web3_tx import Fees, SentTx

SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_txs (
    tx_hash TEXT PRIMARY KEY,            -- 0x…, the keccak of raw
    chain_id INTEGER NOT NULL,
    sender TEXT NOT NULL,                -- checksummed address
    nonce INTEGER NOT NULL,
    label TEXT NOT NULL,                 -- the operation ("approve WETH", "supply weETH", ...)
    ref TEXT NOT NULL,                   -- the caller's reference (its instruction / operation id), '' if none
    raw BLOB NOT NULL,                   -- the signed bytes: what a rebroadcast sends
    to_address TEXT NOT NULL,
    data BLOB NOT NULL,
    value TEXT NOT NULL,                 -- wei, decimal
    gas INTEGER NOT NULL,
    max_fee_per_gas TEXT NOT NULL,
    max_priority_fee_per_gas TEXT NOT NULL,
    base_fee TEXT NOT NULL,
    replaces TEXT NOT NULL,              -- JSON list of the earlier attempts' hashes at this nonce
    sent_at REAL NOT NULL,               -- wall clock of the signing
    recorded_ns INTEGER NOT NULL,        -- wall clock of this row
    state TEXT NOT NULL,                 -- in_flight | mined | replaced | nonce_used | refused
    settled_ns INTEGER,
    mined_hash TEXT                      -- the hash that took this nonce, when one of ours did
);
CREATE INDEX IF NOT EXISTS chain_txs_open ON chain_txs (sender, chain_id, state, nonce);
"""


class TxRecordState(Enum):
    IN_FLIGHT = "in_flight"
    MINED = "mined"
    REPLACED = "replaced"  # another attempt at its nonce mined
    NONCE_USED = "nonce_used"  # a transaction none of ours used the nonce
    REFUSED = "refused"  # the node refused the bytes: never in a pool


class TxJournalCorrupt(FatalVenueError):
    """A record that cannot be what was sent (its bytes do not hash to its hash): never rebroadcast it."""


class TxJournal:
    """One SQLite file; every method commits before it returns (a write error raises: nothing is broadcast)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # isolation_level=None: autocommit, each statement its own durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"TxJournal({self.path})"

    # --- writing ---------------------------------------------------------------------------------------------

    def record(self, chain_id: int, sender: str, sent: SentTx) -> None:
        """An attempt about to be broadcast. Recording the same attempt again changes nothing."""
        f = sent.fees
        self._db.execute(
            "INSERT INTO chain_txs (tx_hash, chain_id, sender, nonce, label, ref, raw, to_address, data, value, gas, "
            "max_fee_per_gas, max_priority_fee_per_gas, base_fee, replaces, sent_at, recorded_ns, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tx_hash) DO NOTHING",
            (sent.tx_hash, chain_id, sender, sent.nonce, sent.label, sent.ref, sent.raw, sent.to, sent.data,
             str(sent.value), sent.gas, str(f.max_fee_per_gas), str(f.max_priority_fee_per_gas), str(f.base_fee),
             json.dumps(list(sent.replaces)), sent.sent_at, time.time_ns(), TxRecordState.IN_FLIGHT.value))

    def refused(self, tx_hash: str) -> None:
        """The node refused these bytes outright (they are in no pool); other attempts at the nonce stay open."""
        self._db.execute("UPDATE chain_txs SET state = ?, settled_ns = ? WHERE tx_hash = ? AND state = ?",
                         (TxRecordState.REFUSED.value, time.time_ns(), tx_hash, TxRecordState.IN_FLIGHT.value))

    def settle(self, chain_id: int, sender: str, nonce: int, mined_hash: str | None) -> None:
        """The nonce's outcome was handed to a caller: `mined_hash` (ours) mined and the others were replaced, or
        (None) another transaction used the nonce."""
        now = time.time_ns()
        with self._db:  # one transaction: every attempt at the nonce settles together
            self._db.execute("BEGIN")
            if mined_hash is None:
                self._db.execute(
                    "UPDATE chain_txs SET state = ?, settled_ns = ? WHERE chain_id = ? AND sender = ? AND nonce = ? "
                    "AND state = ?", (TxRecordState.NONCE_USED.value, now, chain_id, sender, nonce,
                                      TxRecordState.IN_FLIGHT.value))
            else:
                self._db.execute(
                    "UPDATE chain_txs SET state = CASE WHEN tx_hash = ? THEN ? ELSE ? END, settled_ns = ?, "
                    "mined_hash = ? WHERE chain_id = ? AND sender = ? AND nonce = ? AND (state = ? OR tx_hash = ?)",
                    (mined_hash, TxRecordState.MINED.value, TxRecordState.REPLACED.value, now, mined_hash, chain_id,
                     sender, nonce, TxRecordState.IN_FLIGHT.value, mined_hash))

    # --- reading ---------------------------------------------------------------------------------------------

    def in_flight(self, chain_id: int, sender: str) -> list[SentTx]:
        """Per open nonce, its latest attempt (which carries the earlier ones' hashes), by nonce."""
        rows = self._db.execute(
            "SELECT tx_hash, nonce, label, ref, raw, to_address, data, value, gas, max_fee_per_gas, "
            "max_priority_fee_per_gas, base_fee, replaces, sent_at FROM chain_txs "
            "WHERE chain_id = ? AND sender = ? AND state = ? ORDER BY nonce, recorded_ns, rowid",
            (chain_id, sender, TxRecordState.IN_FLIGHT.value)).fetchall()
        latest: dict[int, SentTx] = {}
        for row in rows:
            sent = _sent(row)
            if sent.nonce not in latest or len(sent.replaces) >= len(latest[sent.nonce].replaces):
                latest[sent.nonce] = sent
        return [latest[n] for n in sorted(latest)]

    def mined(self, chain_id: int, sender: str, labels: tuple[str, ...] | None = None,
              since: float = 0.0) -> list[SentTx]:
        """The attempts that mined (of the operations labelled `labels`; None: all), signed at `since` (wall
        seconds) or later, by nonce: a restart's look for the wallet's transactions no report or transfer followed."""
        where, args = "", cast(tuple[str, ...], ())
        if labels is not None:
            where, args = f" AND label IN ({', '.join('?' for _ in labels)})", labels
        rows = self._db.execute(
            "SELECT tx_hash, nonce, label, ref, raw, to_address, data, value, gas, max_fee_per_gas, "
            "max_priority_fee_per_gas, base_fee, replaces, sent_at FROM chain_txs "
            f"WHERE chain_id = ? AND sender = ? AND state = ? AND sent_at >= ?{where} ORDER BY nonce",
            (chain_id, sender, TxRecordState.MINED.value, since, *args)).fetchall()
        return [_sent(row) for row in rows]

    def rows(self, sender: str | None = None) -> list[dict[str, Any]]:
        """Every record (tests, and the `sqlite3` shell's view of it), oldest first; `raw` and `data` as hex."""
        cursor = self._db.execute(
            "SELECT tx_hash, chain_id, sender, nonce, label, ref, state, mined_hash, replaces FROM chain_txs "
            + ("WHERE sender = ? " if sender else "") + "ORDER BY recorded_ns, rowid", (sender,) if sender else ())
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _sent(row: tuple[Any, ...]) -> SentTx:
    (tx_hash, nonce, label, ref, raw, to, data, value, gas, max_fee, tip, base_fee, replaces, sent_at) = row
    raw = bytes(raw)
    if HexBytes(keccak(raw)).to_0x_hex() != tx_hash:
        raise TxJournalCorrupt(f"the journaled transaction {tx_hash} (nonce {nonce}, {label}) does not hash to its "
                               "hash: the record is damaged; not rebroadcast — resolve it by hand")
    return SentTx(label=label, nonce=int(nonce), tx_hash=tx_hash, raw=raw, to=to, data=bytes(data), value=int(value),
                  gas=int(gas), fees=Fees(int(max_fee), int(tip), int(base_fee)), sent_at=float(sent_at),
                  replaces=tuple(json.loads(replaces)), ref=ref)
