"""The full live entry of `usdt_market_neutral` against the local world (issue 13 §5), step by step.

Each run starts a fresh local world (`tests/fakes/local_world.py`: anvil with the real AAVE v3 market, the exchange
fake for Binance, Bybit and OKX, the bridge; the wallet with 100,000 USDT and 1 ETH of gas), then `basisd run
--config configs/local-world.yaml` as a subprocess with the world's env and `BASISD_LOGGING__FORMAT=json`. Its first
instruction is the ENTRY: 3 × TRANSFER_USDT_TO_CEX, BUY_SPOT, 3 × OPEN_PERP_SHORT, WITHDRAW_TO_WALLET,
ATOMIC_LEVERAGE_ENTRY. Once `instruction_finished` is logged, `basisd reconcile --config … --json` asks the running
daemon to reconcile its books with the venues and the chain; then SIGTERM.

Times come from the daemon's own records, all on the same wall clock: the log's `timestamp` for `daemon_ready`,
`instruction_issued`, `order_filled` and `instruction_finished` (process start is the bench's clock just before
`Popen`). The log has no line per chain or transfer step, so those steps end at the daemon's journal rows
(state_dir/journal.sqlite `venue_reports`, written as each report is booked): a USDT transfer ends when its
`…-land` report is booked (the venue credited it), the ETH withdrawal when its `…-land` report into the wallet is
booked, the atomic leverage at `instruction_finished`. Steps carry the refs `<instruction>-<step>` (orders' client
ids, transactions' refs in state_dir/chain-txs.sqlite), which ties every row to its step. A step's time is from the
end of the one before (the first: from `instruction_issued`) to its own end. Inside the chain steps: each
transaction's signing → mined (chain-txs.sqlite `sent_at` → `settled_ns`). One figure is the bench's own: when the
fake venue had paid the withdrawal (its transaction mined: the bridge's `tx_id` set), polled every 10 ms, against
when the daemon booked it landed. A step whose wait outlives its marker (the withdrawal's landing poll sleeping on
after the transfers timer booked the landing) shows in the next step's "step start → first tx signed"; the row
"the withdrawal's venue debit → first tx signed" spans both.

Chain: the wallet's nonce (`eth_getTransactionCount`) before the daemon starts and at `instruction_finished`, and the
receipts of the wallet's transactions in the blocks mined in between (gas used, and what it cost in ETH at their
effective gas price); and the ETH the atomic entry's transaction carried against what the withdrawal landed. Anvil
mines each transaction at once (automine): no block time is in these figures.

    .venv/bin/python tests/bench/bench_live_entry.py [--n 3] [--dir DIR] [--timeout 120]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # run as a script: find machine.py beside it
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from machine import cpu_model, git_revision  # noqa: E402

from tests.fakes.chain.world import BuiltWorld, build_world  # noqa: E402
from tests.fakes.local_world import CONFIG, ETH_MARKETS, LocalWorld, ThreadedLocalWorld  # noqa: E402

ORDER_STEPS = {"BUY_SPOT", "OPEN_PERP_SHORT"}


# --- reading what the daemon and the chain say ----------------------------------------------------------------------


def log_time(event: dict[str, Any]) -> float:
    """A log line's `timestamp` (ISO 8601, UTC) as wall-clock seconds."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


class Daemon:
    """`basisd run` as a child process; its JSON log lines collected as they come."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._log = log_path.open("w")
        self.started = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon", "run", "--config", str(CONFIG)], cwd=ROOT,
                                     env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, name="daemon-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.events.append(event)

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            events = list(self.events)
            for event in events[seen:]:
                if match(event):
                    return event
            seen = len(events)
            if self.proc.poll() is not None:
                self._reader.join(2)
                if any(match(e) for e in self.events[seen:]):
                    return next(e for e in self.events[seen:] if match(e))
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}) before {what}")
            time.sleep(0.01)
        raise TimeoutError(f"no {what} within {timeout_s:g} s")

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        return code


class PaidWatch:
    """When each fake venue's withdrawal was paid on chain (the bridge sets its `tx_id` once mined): polled on the
    world's loop every `every_s`. The bench's clock, not the daemon's: how long the daemon took to notice."""

    def __init__(self, world: ThreadedLocalWorld, every_s: float = 0.01) -> None:
        self.paid: dict[str, float] = {}  # fake withdrawal id → wall time first seen paid
        self._world = world
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paid-watch", daemon=True)
        self._thread.start()

    def _paid_now(self) -> list[str]:
        fake = self._world.world.fake
        if fake is None:
            return []
        return [t.id for venue in ETH_MARKETS for t in getattr(fake, venue).transfers
                if t.kind == "withdrawal" and t.tx_id]

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                ids = self._world.call(self._paid_now)
            except Exception:  # the world stopping under the watch: nothing more to see
                return
            now = time.time()
            for i in ids:
                self.paid.setdefault(i, now)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


# --- one run ---------------------------------------------------------------------------------------------------------


@dataclass
class Run:
    ready_s: float = 0.0
    ready_to_issued_s: float = 0.0
    entry_s: float = 0.0
    completed: bool = False
    steps: list[tuple[str, str, float]] = field(default_factory=list)  # (label, how its end is marked, seconds)
    parts: dict[str, float] = field(default_factory=dict)  # named pieces inside the steps, seconds
    watched: set[str] = field(default_factory=set)  # the parts timed by the bench's own watch, not the journals
    txs: int = 0
    gas_used: int = 0
    gas_eth: float = 0.0
    gas_by_label: dict[str, int] = field(default_factory=dict)
    # ETH the atomic entry's transaction carried (its value) minus what the withdrawal landed in the wallet: above 0,
    # the entry was sized on the plan and the difference came out of the wallet's gas ETH.
    entry_over_landed_eth: float | None = None
    reconciled_clean: bool = False
    reconcile_line: str = ""
    reconcile_s: float = 0.0
    exit_code: int | None = None
    warnings: list[str] = field(default_factory=list)


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    connection.row_factory = sqlite3.Row
    try:
        return list(connection.execute(sql))
    finally:
        connection.close()


StepEnd = tuple[float, str, str]  # (when the step ended, what marks it, the step's label)


@dataclass
class Records:
    """What the daemon left of one entry: its log, its journals, its transfer book; and the bench's watch."""

    run: Run
    fills: dict[str, float]  # client order id → its (last) order_filled line
    intents: dict[str, float]  # client order id → its journal intent row
    reports: dict[str, float]  # report key → when it was booked (journal venue_reports)
    txs: list[sqlite3.Row]  # the daemon's transactions (chain-txs.sqlite), by nonce
    transfers: dict[str, Any]  # state_dir/transfers.json
    paid: dict[str, float]  # fake withdrawal id → when the bench saw it paid on chain
    finished: float

    @classmethod
    def read(cls, run: Run, events: list[dict[str, Any]], state: Path, paid: dict[str, float],
             finished: float) -> Records:
        journal = state / "journal.sqlite"
        path = state / "transfers.json"
        return cls(run, {e["client_order_id"]: log_time(e) for e in events if e.get("event") == "order_filled"},
                   {r["client_order_id"]: r["wall_ns"] / 1e9
                    for r in rows(journal, "SELECT client_order_id, wall_ns FROM orders WHERE event = 'intent'")},
                   {r["report_key"]: r["wall_ns"] / 1e9 for r in rows(journal,
                                                                      "SELECT report_key, wall_ns FROM venue_reports")},
                   rows(state / "chain-txs.sqlite", "SELECT ref, label, tx_hash, mined_hash, sent_at, settled_ns, "
                                                   "value FROM chain_txs ORDER BY nonce"),
                   json.loads(path.read_text()) if path.exists() else {}, paid, finished)

    def part(self, name: str, seconds: float, watched: bool = False) -> None:
        self.run.parts[name] = seconds
        if watched:
            self.run.watched.add(name)

    def mined(self, name: str, tx: sqlite3.Row) -> None:
        if tx["settled_ns"]:
            self.part(f"{name}: {tx['label']} signed → mined", tx["settled_ns"] / 1e9 - tx["sent_at"])

    # One per kind of step: its end, or None when nothing marks it.

    def order(self, name: str, ref: str, start: float) -> StepEnd | None:
        if ref not in self.fills:
            return None
        if ref in self.intents:
            self.part(f"{name}: order intent → filled", self.fills[ref] - self.intents[ref])
        return self.fills[ref], "log: order_filled", name

    def transfer_in(self, name: str, ref: str, start: float) -> StepEnd | None:
        """The wallet's USDT to a venue: landed when the venue's credit is booked."""
        sent = [t for t in self.txs if t["ref"] == ref]
        if not sent:
            return None
        tx_hash = sent[-1]["mined_hash"] or sent[-1]["tx_hash"]
        venue = next((t["destination"] for t in self.transfers.get("book", [])
                      if t["transfer_id"] == f"wallet:{tx_hash}"), "?")
        land = self.reports.get(f"{venue}:transfer-wallet:{tx_hash}-land")
        if land is None:
            return None
        name = f"{name} → {venue}"
        tx = sent[-1]
        self.part(f"{name}: step start → tx signed", tx["sent_at"] - start)
        self.mined(name, tx)
        booked = self.reports.get(f"chain:{tx_hash}")  # the wallet's side: read back from the chain and booked
        if tx["settled_ns"] and booked is not None:
            self.part(f"{name}: mined → the wallet's debit booked", booked - tx["settled_ns"] / 1e9)
            self.part(f"{name}: the wallet's debit booked → the venue's credit booked", land - booked)
        return land, "journal: the venue's -land report", name

    def withdrawal(self, name: str, ref: str, start: float) -> StepEnd | None:
        """A venue's ETH to the wallet: landed when the wallet's credit is booked."""
        transfer_id = self.transfers.get("refs", {}).get(ref)
        if transfer_id is None:
            return None
        venue, venue_id = transfer_id.split(":", 1)
        land = self.reports.get(f"{venue}:transfer-{transfer_id}-land")
        debit = self.reports.get(f"{venue}:transfer-{transfer_id}-debit")
        if land is None:
            return None
        name = f"{name} ← {venue}"
        if debit is not None:
            self.part(f"{name}: venue debited (requested) → landed booked", land - debit)
            if venue_id in self.paid:
                self.part(f"{name}: venue debited → paid on chain", self.paid[venue_id] - debit, watched=True)
                self.part(f"{name}: paid on chain → landed booked", land - self.paid[venue_id], watched=True)
        return land, "journal: the wallet's -land report", name

    def leverage(self, name: str, ref: str, start: float) -> StepEnd | None:
        sent = [t for t in self.txs if t["ref"] == ref]
        if sent:
            self.part(f"{name}: step start → first tx signed", sent[0]["sent_at"] - start)
            debits = [v for k, v in self.reports.items() if k.endswith("-debit")]
            if len(debits) == 1:  # the withdrawal's wait ends here, not at its landing: it sleeps out its poll
                self.part(f"{name}: the withdrawal's venue debit → first tx signed", sent[0]["sent_at"] - debits[0])
            for tx in sent:
                self.mined(name, tx)
            if sent[-1]["settled_ns"]:
                self.part(f"{name}: last tx mined → instruction_finished", self.finished - sent[-1]["settled_ns"] / 1e9)
        return self.finished, "log: instruction_finished", name

    def entry_over_landed(self) -> float | None:
        landed = [float(v) for v in self.transfers.get("landed", {}).values()]
        value = [int(t["value"]) for t in self.txs if t["label"] == "atomic entry"]
        return value[0] / 1e18 - landed[0] if len(landed) == 1 and len(value) == 1 else None


def attribute(run: Run, events: list[dict[str, Any]], state: Path, paid: dict[str, float]) -> None:
    """Each step's end from the log (order fills) or the journals (transfers landed), as the module says."""
    issued = next(e for e in events if e.get("event") == "instruction_issued" and e.get("type") == "ENTRY")
    finished = next(e for e in events if e.get("event") == "instruction_finished"
                    and e.get("instruction_id") == issued["instruction_id"])
    records = Records.read(run, events, state, paid, log_time(finished))
    ends: dict[str, Callable[[str, str, float], StepEnd | None]] = {
        "BUY_SPOT": records.order, "OPEN_PERP_SHORT": records.order, "TRANSFER_USDT_TO_CEX": records.transfer_in,
        "WITHDRAW_TO_WALLET": records.withdrawal, "ATOMIC_LEVERAGE_ENTRY": records.leverage}
    previous = log_time(issued)
    for number, kind in enumerate(issued["steps"], start=1):
        end = ends[kind](f"{number} {kind}", f"{issued['instruction_id']}-{number}", previous) if kind in ends else None
        if end is None:
            run.warnings.append(f"step {number} {kind}: nothing marks its end; counted in the next step's time")
            continue
        when, marker, label = end
        run.steps.append((label, marker, when - previous))
        previous = when
    if abs(previous - records.finished) > 1e-6:
        run.steps.append(("(after the last marked step)", "log: instruction_finished", records.finished - previous))
    run.entry_over_landed_eth = records.entry_over_landed()


def chain_cost(run: Run, url: str, wallet: str, first_block: int, last_block: int, state: Path) -> None:
    labels = {}
    for tx in rows(state / "chain-txs.sqlite", "SELECT label, tx_hash, mined_hash FROM chain_txs"):
        labels[(tx["mined_hash"] or tx["tx_hash"]).lower()] = tx["label"]
    fee_wei = 0
    for number in range(first_block + 1, last_block + 1):
        block = rpc(url, "eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if tx["from"].lower() != wallet.lower():
                continue
            receipt = rpc(url, "eth_getTransactionReceipt", [tx["hash"]])
            used = int(receipt["gasUsed"], 16)
            run.gas_used += used
            fee_wei += used * int(receipt["effectiveGasPrice"], 16)
            label = labels.get(tx["hash"].lower(), "(not in the daemon's tx journal)")
            run.gas_by_label[label] = run.gas_by_label.get(label, 0) + used
    run.gas_eth = fee_wei / 1e18


def reconcile(env: dict[str, str]) -> tuple[bool, str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "daemon", "reconcile", "--config", str(CONFIG), "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {done.stderr.strip()[-300:]}", elapsed
    answer = json.loads(done.stdout)
    clean = bool(answer.get("clean"))
    said = "books and venues agree" if clean else f"{len(answer.get('drifts', []))} difference(s): {answer['drifts']}"
    return clean, f"reconciled {', '.join(answer.get('accounts', []))}: {said}", elapsed


def one_run(directory: Path, built: BuiltWorld, timeout_s: float) -> Run:
    run = Run()
    world = ThreadedLocalWorld(LocalWorld(directory, built=built)).start()
    watch: PaidWatch | None = None
    daemon: Daemon | None = None
    try:
        url, wallet = world.world.rpc_url, world.world.wallet
        nonce_before = int(rpc(url, "eth_getTransactionCount", [wallet, "latest"]), 16)
        block_before = int(rpc(url, "eth_blockNumber", []), 16)
        env = {**os.environ, **world.env, "BASISD_LOGGING__FORMAT": "json", "BASISD_METRICS__PORT": "0",
               "BASISD_API__PORT": "0", "PYTHONUNBUFFERED": "1"}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        watch = PaidWatch(world)
        daemon = Daemon(env, directory / "daemon.log")
        ready = daemon.wait_for(lambda e: e.get("event") == "daemon_ready", timeout_s, "daemon_ready")
        issued = daemon.wait_for(lambda e: e.get("event") == "instruction_issued" and e.get("type") == "ENTRY",
                                 timeout_s, "the ENTRY's instruction_issued")
        finished = daemon.wait_for(lambda e: e.get("event") == "instruction_finished"
                                   and e.get("instruction_id") == issued["instruction_id"], timeout_s,
                                   "the ENTRY's instruction_finished")
        nonce_after = int(rpc(url, "eth_getTransactionCount", [wallet, "latest"]), 16)
        block_after = int(rpc(url, "eth_blockNumber", []), 16)
        run.ready_s = log_time(ready) - daemon.started
        run.ready_to_issued_s = log_time(issued) - log_time(ready)
        run.entry_s = log_time(finished) - log_time(issued)
        run.completed = bool(finished.get("completed"))
        if not run.completed:
            run.warnings.append(f"the entry did not complete: {finished.get('reason')}")
        run.txs = nonce_after - nonce_before
        run.reconciled_clean, run.reconcile_line, run.reconcile_s = reconcile(env)
        run.exit_code = daemon.stop()
        daemon = None
        watch.close()
        state = world.world.state_dir
        chain_cost(run, url, wallet, block_before, block_after, state)
        if len([t for t in rows(state / "chain-txs.sqlite", "SELECT state FROM chain_txs") if t["state"] == "mined"]) \
                != run.txs:
            run.warnings.append("the wallet's nonce moved by a different count than the daemon's mined transactions")
        attribute(run, daemon_events(directory / "daemon.log"), state, watch.paid)
        return run
    finally:
        if daemon is not None:
            daemon.stop()
        if watch is not None:
            watch.close()
        world.stop()


def daemon_events(log_path: Path) -> list[dict[str, Any]]:
    out = []
    for line in log_path.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


# --- the table -------------------------------------------------------------------------------------------------------


def spread(values: list[float], scale: float = 1000.0, places: int = 0) -> str:
    if not values:
        return "– | – | –"
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{places}f} | {min(v):.{places}f} | {max(v):.{places}f}"


def report(runs: list[Run]) -> None:
    n = len(runs)
    print(f"commit {git_revision()}, {cpu_model()}; {n} runs, each a fresh local world (anvil automine, the exchange "
          f"fake over TLS, the bridge), `basisd run --config {CONFIG}`\n")
    print("| ms (unless stated) | median | min | max | marked by |")
    print("|---|---|---|---|---|")
    print(f"| process start → daemon_ready | {spread([r.ready_s for r in runs])} | bench's Popen → log |")
    print(f"| daemon_ready → instruction_issued | {spread([r.ready_to_issued_s for r in runs])} | log |")
    print(f"| **the ENTRY: instruction_issued → instruction_finished** | {spread([r.entry_s for r in runs])} | log |")
    labels: list[tuple[str, str]] = []
    for r in runs:
        for label, marker, _ in r.steps:
            if (label, marker) not in labels:
                labels.append((label, marker))
    for label, marker in labels:
        values = [s for r in runs for lab, mark, s in r.steps if (lab, mark) == (label, marker)]
        print(f"| step {label} | {spread(values)} | {marker} |")
    parts: list[str] = []
    for r in runs:
        parts.extend(p for p in r.parts if p not in parts)
    for part in parts:
        values = [r.parts[part] for r in runs if part in r.parts]
        source = "bench's watch (10 ms)" if any(part in r.watched for r in runs) else "journals"
        print(f"| ↳ {part} | {spread(values, places=1)} | {source} |")
    print(f"| chain transactions (wallet's nonce after − before) | {spread([float(r.txs) for r in runs], 1)} | "
          "eth_getTransactionCount |")
    print(f"| gas used, the wallet's transactions (units) | {spread([float(r.gas_used) for r in runs], 1)} | "
          "receipts |")
    gas_labels: list[str] = []
    for r in runs:
        gas_labels.extend(g for g in r.gas_by_label if g not in gas_labels)
    for label in gas_labels:
        values = [float(r.gas_by_label[label]) for r in runs if label in r.gas_by_label]
        print(f"| ↳ gas: {label} (units, all of its transactions) | {spread(values, 1)} | receipts |")
    print(f"| gas paid (ETH × 10⁻⁶) | {spread([r.gas_eth for r in runs], 1e6, 1)} | receipts × effective price |")
    over = [r.entry_over_landed_eth for r in runs if r.entry_over_landed_eth is not None]
    print(f"| ETH into the atomic entry (tx value) − ETH the withdrawal landed (ETH × 10⁻³) | "
          f"{spread(over, 1e3, 2)} | chain-txs value, transfers.json landed |")
    print(f"| `basisd reconcile` round trip | {spread([r.reconcile_s for r in runs])} | bench's clock |")
    clean = sum(r.reconciled_clean for r in runs)
    completed = sum(r.completed for r in runs)
    print(f"\nentry completed in {completed}/{n} runs; `basisd reconcile` after the entry: books and venues agree in "
          f"{clean}/{n} runs; daemon exit codes after SIGTERM: {[r.exit_code for r in runs]}")
    for i, r in enumerate(runs, 1):
        print(f"run {i}: {r.reconcile_line}")
        for warning in r.warnings:
            print(f"run {i}: {warning}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3, help="runs, each on a fresh local world")
    ap.add_argument("--dir", default=None, help="where the worlds go (default: a temporary directory, removed)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each of the daemon's events")
    args = ap.parse_args()
    built = build_world()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for i in range(args.n):
            run = one_run(Path(directory) / f"run-{i + 1}", built, args.timeout)
            print(f"run {i + 1}/{args.n}: entry {run.entry_s * 1000:.0f} ms, {run.txs} transactions, "
                  f"{run.reconcile_line}", file=sys.stderr, flush=True)
            runs.append(run)
    report(runs)
    return 0 if all(r.completed and r.reconciled_clean for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
