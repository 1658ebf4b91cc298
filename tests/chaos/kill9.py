"""The kill -9 runner: `python -m tests.chaos.kill9 --trials N --seed S`.

Each trial is a fresh local world (tests/fakes/local_world.py: anvil with the real AAVE v3 market, the exchange fake
for Binance, Bybit and OKX, the bridge between them) and a scripted live session of `usdt_market_neutral`
(configs/local-world.yaml) run by a `basisd run` child process:

1. entry — the daemon enters on its own at start-up;
2. rebalance — the world's levers move: the LST's rate up (the collateral grows, the hedge falls short) and one
   funding payment on every venue's perp;
3. margin_topup — ETH up on the chain and every venue together, in 2 % steps (tests/chaos/levers.py), until the
   first venue's margin ratio (USDT of all its wallets + uPnL, over the notional: what the books read) is 0.17,
   inside the risk's WARNING band (margin_warning_ratio 0.20): the strategy's ADD_MARGIN_TO_CEX frees ETH from AAVE
   (a flash-loan deleverage at constant LTV), sends it to the venue, sells it there and shrinks the venue's short.
   Done when every venue's ratio is back above 0.5, USDT has arrived on a venue, and the book is hedged. (The
   price moves together on all venues, so all three usually need a top-up at once.)
4. deleverage — the LST's rate down until the Pool's LTV is λ + 0.002, past the act band (URGENT): the strategy's
   REDUCE_LTV repays to λ in one flash-loan transaction (its DELTA_ADJUST follows next decision). Done when the
   Pool's LTV (getUserAccountData) is within the warn band of λ and the book is hedged. The script's daemon runs
   with `risk.ltv_warn_above_target` / `ltv_act_above_target` at 0.0005 / 0.001 (the defaults 0.01 / 0.02 cannot
   be reached by a lever before the drawdown breaker trips: see LTV_ACT_ABOVE_TARGET);
5. halt and resume — `basisd halt`, `basisd resume`;
6. flatten — `basisd flatten`, until the world holds no perp, no AAVE debt and no collateral.

A seeded RNG (`random.Random(f"{seed}:{trial}")`: one trial re-runs alone with `--only T`) picks the trial's kill
points, each armed at the start of one step (or at the restart after the previous kill) and fired with SIGKILL the
instant its condition is seen, polling the state directory every millisecond:

- `time`: a random delay after arming;
- `intent`: the n-th new `orders` row 'intent' in journal.sqlite (the order journaled, maybe not yet sent);
- `tx`: the n-th new row of chain-txs.sqlite (a transaction journaled before its broadcast);
- `transfer`: a transfer in flight in transfers.json, the bridge held (`ChainBridge.paused`) so that the wallet's
  deposit is mined and not yet credited (the bridge is let go just before or just after the restart, seeded);
- `flash`: the atomic entry's / unwind's transaction journaled (signed: mid-flash-loan);
- `fill` (opt-in, `--extra-kinds fill`, drawn after the others so that a seed's plan is unchanged without it): an
  order journaled 'filled' whose FillReport is not journaled yet — the gap in which a fill can be lost.

After each kill the daemon is restarted on the same state directory (its journals, the transfer desk's store and the
tx journal live there) and the script goes on from the step it was at: a step is done when the *world* says so
(entered and hedged; rebalanced; margins restored; LTV back in band; ACTIVE again; flat), and a control command
lost to a kill is sent again. At the end
the books are checked against the world's own state, never the daemon's word alone:

- books_equal_truth: `basisd reconcile --json` clean, the daemon's perps (`basisd status --json`) equal to the fake's
  positions, its AAVE collateral and debt (metrics) equal to the Pool's account data;
- duplicate_orders: a client id the fake saw on more than one order; unintended_orders: an order the fake saw whose
  client id no run of the daemon journaled as an intent;
- duplicate_txs: more than one of the wallet's transactions in the blocks at one nonce, or more than one attempt
  journaled as mined at one nonce; unjournaled_txs: a wallet transaction in the blocks the tx journal never saw;
- lost_fills: a trade the fake executed that no run journaled as a FillReport; fills_booked_twice: one journaled in
  more than one run.

Also counted, as violations: self_halts (the daemon halted itself where the script wants it trading — a breaker or
a booking failure at a restart; the runner then resumes it as an operator would, so that later kill points still
run), steps_not_done (a step the world never showed done within `--step-timeout`; the trial then goes straight to the
flatten) and a daemon that exited by itself. resent_client_ids (order requests repeated under one client id, which
the fake refuses) is reported, not failed on.

The last line printed is one JSON object with the totals; the exit status is 1 if any invariant failed, with each
failing trial's details (seed, trial, kill points, what differed) printed above it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

from daemon.venues.client_ids import from_venue
from tests.chaos import levers
from tests.fakes.chain.world import BuiltWorld, build_world
from tests.fakes.local_world import CONFIG, ETH_MARKETS, LocalWorld, ThreadedLocalWorld
from tests.integration.daemon_process import ROOT, DaemonProcess, metric_value

D = Decimal
KINDS = ("time", "intent", "tx", "transfer", "flash")
KIND_WEIGHTS = (1, 2, 2, 1, 1)
# Opt-in kinds (`--extra-kinds`), outside the seeded draw of KINDS so that adding one keeps every seed's plan:
# `fill` fires when an order's outcome is journaled 'filled' and its FillReport is not (yet): the gap a fill is lost in.
EXTRA_KINDS = ("fill",)
STEPS = ("entry", "rebalance", "margin_topup", "deleverage", "halt_resume", "flatten")
# Where the orders and transactions are: a top-up is a flash-loan deleverage, an ETH transfer to a venue, a spot sale
# and a perp order; a deleverage one flash-loan transaction and then (next decision) a perp order.
STEP_WEIGHTS = {"entry": 4, "rebalance": 2, "margin_topup": 3, "deleverage": 2, "halt_resume": 1, "flatten": 3}
TRADING_STEPS = ("entry", "rebalance", "margin_topup", "deleverage")  # the daemon halting itself in one: a violation
# The strategy decides every few seconds instead of every 30 s: a rebalance and a re-plan after a restart come soon.
DECISION_INTERVAL_S = 3
STEP_TIMEOUT_S = 25.0  # a few decisions: a restarted daemon that has not finished the step by then will not
SETTLE_S = 1.0  # a step's world condition must hold this long, with no instruction in flight, to count as done
HEDGE_TOLERANCE = D("0.03")  # |shorts + LST held in ETH| / LST held: hedged
AAVE_TOLERANCE = D("0.002")  # relative: the books' AAVE legs (metrics) against the Pool's account data
POLL_S = 0.001
LST = "weETH"
LST_RATE_STEP = D("1.03")  # the rebalance lever: the LST's rate up 3 %
FUNDING_RATE = D("0.0001")
# The margin top-up's lever: ETH up until the first venue's margin ratio is here, inside the risk's WARNING band
# (risk.margin_warning_ratio 0.20, above margin_urgent_ratio 0.15), which is what makes the strategy top it up.
MARGIN_LEVER_RATIO = D("0.17")
MARGIN_RESTORED = D("0.5")  # every venue's ratio at least this (the top-up aims at margin_ratio_target, 1.0): done
# The deleverage's band (risk.ltv_warn_above_target / ltv_act_above_target), set for the script's daemon. The
# default 0.01 / 0.02 cannot be reached by a lever without tripping the drawdown breaker first: at λ ≈ 0.909 the
# collateral is 11 times the AAVE net, so the LST's fall that takes the LTV 0.02 above λ (2.2 %) loses about 24 % of
# the AAVE net, over 10 % of the NAV, and the breaker (3 % reduce, 5 % flatten and halt) unwinds the book before the
# strategy's REDUCE_LTV could. A band of 0.001 needs a fall of about 0.2 % of the rate: about 1 % of the NAV.
LTV_WARN_ABOVE_TARGET = D("0.0005")
LTV_ACT_ABOVE_TARGET = D("0.001")
LTV_LEVER_ABOVE_TARGET = D("0.002")  # the deleverage's lever: the LST's rate down until the LTV is λ + this
# λ = max_ltv × (1 − max_stake_spread_move), configs/modes/usdt_market_neutral.yaml (the daemon's spec.target_ltv).
TARGET_LTV = D("0.93") * (1 - D("0.0225"))


# --- kill points ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    step: str  # the script step at whose start (or at the restart within it) the point is armed
    kind: str  # one of KINDS
    nth: int = 1  # intent / tx: the n-th new row after arming
    at_s: float = 0.0  # time: seconds after arming

    def __str__(self) -> str:
        what = f"after {self.at_s:.3f}s" if self.kind == "time" else f"#{self.nth}"
        return f"{self.step}:{self.kind} {what}"


def plan(seed: int, trial: int, max_kills: int, steps: tuple[str, ...] = STEPS,
         extra: tuple[str, ...] = ()) -> list[KillPoint]:
    """The trial's kill points, from its own RNG: the same (seed, trial, steps, extra) gives the same points.
    `extra` (EXTRA_KINDS): one more point of each, drawn after the others (a seed's other points stay the same)."""
    rng = random.Random(f"{seed}:{trial}")
    points = []
    for _ in range(rng.randint(1, max_kills) if max_kills > 0 else 0):
        step = rng.choices(steps, weights=[STEP_WEIGHTS[s] for s in steps])[0]
        kind = rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
        points.append(KillPoint(step, kind, nth=rng.randint(1, 4) if kind in ("intent", "tx") else 1,
                                at_s=round(rng.uniform(0.0, 4.0), 3) if kind == "time" else 0.0))
    trading = [s for s in steps if s != "halt_resume"] or list(steps)
    points += [KillPoint(rng.choice(trading), kind) for kind in extra]
    return sorted(points, key=lambda p: steps.index(p.step))


# --- what the state directory says (read-only) ------------------------------------------------------------------


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a daemon's SQLite file, read-only (WAL: a reader never blocks its writer); [] before it exists."""
    if not path.exists():
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path / "journal.sqlite"
        self.txs = path / "chain-txs.sqlite"
        self.transfers = path / "transfers.json"

    def intents(self) -> int:
        return int(_rows(self.journal, "SELECT count(*) FROM orders WHERE event = 'intent'")[0][0]) \
            if self.journal.exists() else 0

    def tx_rows(self) -> int:
        return int(_rows(self.txs, "SELECT count(*) FROM chain_txs")[0][0]) if self.txs.exists() else 0

    def flash_rows(self) -> int:
        rows = _rows(self.txs, "SELECT count(*) FROM chain_txs WHERE label LIKE 'atomic%'")
        return int(rows[0][0]) if rows else 0

    def transfers_in_flight(self) -> set[str]:
        try:
            book = json.loads(self.transfers.read_text()).get("book", [])
        except (OSError, ValueError):
            return set()
        return {t["transfer_id"] for t in book if t.get("state") in ("requested", "in_transit")}

    def unbooked_fills(self) -> set[str]:
        """Client ids whose order is journaled 'filled' and that no FillReport names yet."""
        return {row[0] for row in _rows(self.journal, (
            "SELECT client_order_id FROM orders WHERE event = 'filled' AND client_order_id NOT IN "
            "(SELECT json_extract(body, '$.client_order_id') FROM venue_reports WHERE kind = 'FillReport')"))}

    def counts(self) -> dict[str, Any]:
        return {"intent": self.intents(), "tx": self.tx_rows(), "flash": self.flash_rows(),
                "transfer": self.transfers_in_flight(), "fill": self.unbooked_fills()}


# --- one daemon process -------------------------------------------------------------------------------------------


class Life:
    """One `basisd run` process on the trial's state directory."""

    def __init__(self, n: int, trial_dir: Path, env: dict[str, str]) -> None:
        self.n = n
        self.dir = trial_dir / f"life{n}"
        self.dir.mkdir(parents=True)
        self.env = env
        self.proc = DaemonProcess(ROOT / CONFIG, self.dir, env=env)
        self.started = time.monotonic()

    def ready(self, timeout_s: float = 60) -> None:
        self.proc.wait_for_event("daemon_ready", timeout_s)

    def alive(self) -> bool:
        return self.proc.proc.poll() is None

    def in_flight(self) -> set[str]:
        events = self.proc.events()
        issued = {e["instruction_id"] for e in events if e.get("event") == "instruction_issued"}
        return issued - {e["instruction_id"] for e in events if e.get("event") == "instruction_finished"}

    def finished(self) -> list[dict[str, Any]]:
        return [e for e in self.proc.events() if e.get("event") == "instruction_finished"]

    def kill(self) -> None:
        self.proc.proc.send_signal(signal.SIGKILL)
        self.proc.proc.wait(10)

    def stop(self) -> int | None:
        if not self.alive():
            return self.proc.proc.returncode
        self.proc.signal(signal.SIGTERM)
        try:
            return self.proc.wait_exit(30)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            (self.dir / "daemon.log").write_text(self.proc.output())
        self.proc.close()


def basisd(env: dict[str, str], *args: str, timeout_s: float = 60) -> dict[str, Any] | None:
    """A control command to the running daemon, its JSON answer; None if it could not be had (a daemon killed under
    it, a refusal): the script sends it again."""
    try:
        done = subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(CONFIG), "--json"], cwd=ROOT,
                              env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    try:
        answer: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return None
    return answer if done.returncode == 0 else {"failed": True, **answer}


# --- the world's truth --------------------------------------------------------------------------------------------


@dataclass
class Truth:
    perps: dict[str, Decimal]  # instrument id as the daemon names it -> signed size
    collateral_usd: Decimal
    debt_usd: Decimal
    eth_price: Decimal
    orders: list[tuple[str, str, str, str]]  # (venue, client id, market, symbol)
    trades: list[tuple[str, int, str]]  # (venue, trade id, market)
    loose_eth: Decimal  # ETH outside AAVE: the wallet's native ETH (its gas) and WETH, the venues' spot ETH
    # venue -> (USDT + uPnL) / (|size| × mark), with the USDT of all the venue's wallets: the margin ratio the books
    # and the strategy read (they keep one account per venue, Binance's spot and futures wallets summed)
    margins: dict[str, Decimal] = field(default_factory=dict)
    usdt: dict[str, Decimal] = field(default_factory=dict)  # venue -> USDT in all its wallets
    # venue -> the ratio with the futures wallet's USDT alone: what Binance's own margin is (Bybit's and OKX's one
    # wallet: the same as `margins`); shown, not checked
    futures_margins: dict[str, Decimal] = field(default_factory=dict)

    @property
    def ltv(self) -> Decimal:
        """The Pool's own LTV of the wallet (debt / collateral at the oracle); 0 without collateral."""
        return self.debt_usd / self.collateral_usd if self.collateral_usd else D(0)

    @property
    def lst_eth(self) -> Decimal:
        return (self.collateral_usd - self.debt_usd) / self.eth_price

    @property
    def long_eth(self) -> Decimal:
        """Every ETH held (what the shorts hedge): AAVE's net at the oracle, and the loose ETH."""
        return self.lst_eth + self.loose_eth

    @property
    def shorts(self) -> Decimal:
        return sum(self.perps.values(), D(0))

    def entered(self) -> bool:
        return self.debt_usd > 0 and self.long_eth > 0 and abs(self.shorts + self.long_eth) / self.long_eth < \
            HEDGE_TOLERANCE

    def describe(self) -> str:
        perps = " ".join(f"{k.split(':')[0]}={v}" for k, v in self.perps.items())
        return (f"AAVE collateral {self.collateral_usd} USD debt {self.debt_usd} USD (net {self.lst_eth:.4f} ETH), "
                f"LTV {self.ltv:.5f}, loose ETH {self.loose_eth:.4f}, perps {perps} (sum {self.shorts}), margin ratios "
                + " ".join(f"{v}={r:.3f}" for v, r in self.margins.items()) + " (futures wallet alone: "
                + " ".join(f"{v}={r:.3f}" for v, r in self.futures_margins.items()) + ")"
                + ", USDT " + " ".join(f"{v}={u:.2f}" for v, u in self.usdt.items()))

    def flat(self) -> bool:
        return self.debt_usd == 0 and self.collateral_usd == 0 and all(v == 0 for v in self.perps.values())


def instrument(venue: str) -> str:
    return f"{venue}:Perp:ETHUSDT"


def read_truth(tw: ThreadedLocalWorld) -> Truth:
    world = tw.world
    chain, fake = world.chain, world.fake
    assert chain is not None and fake is not None
    # Every chain read at one mined block, in that block's own environment. A read at "latest" failed once with
    # Panic 0x11 (underflow) in a trial where three top-ups sent a burst of transactions; the likely cause: anvil
    # runs such a call with the wall clock's timestamp, which a burst of blocks (+1 s each) runs ahead of, and AAVE's
    # interest accrual computes block.timestamp − lastUpdateTimestamp. One block is also one consistent picture of
    # the wallet and the Pool.
    block = tw.run(chain.w3.eth.block_number)
    collateral, debt, *_ = tw.run(chain.pool.functions.getUserAccountData(world.wallet).call(block_identifier=block))
    oracle = chain.contract("AaveOracle", chain.book["AaveOracle"])
    price = tw.run(oracle.functions.getAssetPrice(chain.reserve("WETH")["underlying"]).call(block_identifier=block))
    native = tw.run(chain.w3.eth.get_balance(world.wallet, block_identifier=block))
    weth = tw.run(chain.token("WETH").functions.balanceOf(world.wallet).call(block_identifier=block))

    def venues() -> tuple[dict[str, Decimal], list[tuple[str, str, str, str]], list[tuple[str, int, str]], Decimal,
                          dict[str, Decimal], dict[str, Decimal], dict[str, Decimal]]:
        perps, orders, trades, spot_eth, margins, usdt, futures = {}, [], [], D(0), {}, {}, {}
        for venue, (perp, _) in ETH_MARKETS.items():
            state = getattr(fake, venue)
            position = state.position(perp)
            perps[instrument(venue)] = position.amount if position is not None else D(0)
            orders += [(venue, o.client_id, o.market, o.symbol) for o in state.orders.values()]
            trades += [(venue, t.id, t.market) for t in state.trades]
            spot_eth += sum((w.get("ETH", D(0)) for w in state.wallets.values()), D(0))
            usdt[venue] = sum((w.get("USDT", D(0)) for w in state.wallets.values()), D(0))
            if position is not None:
                notional = abs(position.amount) * state.marks[perp]
                margins[venue] = (usdt[venue] + state.unrealized_pnl(perp)) / notional
                futures[venue] = (state.balance("USDT") + state.unrealized_pnl(perp)) / notional
        return perps, orders, trades, spot_eth, margins, usdt, futures

    perps, orders, trades, spot_eth, margins, usdt, futures = tw.call(venues)
    loose = D(native).scaleb(-18) + D(weth).scaleb(-18) + spot_eth
    return Truth(perps, D(collateral).scaleb(-8), D(debt).scaleb(-8), D(price).scaleb(-8), orders, trades, loose,
                 margins, usdt, futures)


def wallet_transactions(tw: ThreadedLocalWorld, first_nonce: int) -> list[tuple[int, str]]:
    """(nonce, hash) of every transaction from the wallet in the chain's blocks, from `first_nonce` on (the world's
    own deployment of the executor comes before: not the daemon's)."""
    world = tw.world
    chain = world.chain
    assert chain is not None

    async def scan() -> list[tuple[int, str]]:
        out = []
        latest = await chain.w3.eth.block_number
        for n in range(latest + 1):
            block = await chain.w3.eth.get_block(n, full_transactions=True)
            for tx in block["transactions"]:
                if isinstance(tx, bytes | str):  # (full_transactions: never a bare hash)
                    continue
                if str(tx["from"]).lower() == world.wallet.lower() and int(tx["nonce"]) >= first_nonce:
                    tx_hash = bytes(tx["hash"]).hex().removeprefix("0x")
                    out.append((int(tx["nonce"]), "0x" + tx_hash))
        return out

    return tw.run(scan(), 60)


# --- a trial ------------------------------------------------------------------------------------------------------


@dataclass
class Kill:
    life: int
    point: str
    at_s: float  # since the life started
    seen: str  # what was seen when it fired


@dataclass
class TrialResult:
    seed: int
    trial: int
    plan: list[str]
    kills: list[Kill] = field(default_factory=list)
    steps: dict[str, str] = field(default_factory=dict)  # step -> "done" | why not
    violations: list[str] = field(default_factory=list)
    books_equal_truth: bool = False
    duplicate_orders: int = 0
    unintended_orders: int = 0
    duplicate_txs: int = 0
    unjournaled_txs: int = 0
    lost_fills: int = 0
    fills_booked_twice: int = 0
    resent_client_ids: int = 0
    self_halts: int = 0
    elapsed_s: float = 0.0
    dir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out["kills"] = [asdict(k) for k in self.kills]
        return out


class Trial:
    def __init__(self, seed: int, trial: int, max_kills: int, built: BuiltWorld, root: Path,
                 steps: tuple[str, ...] = STEPS, step_timeout_s: float = STEP_TIMEOUT_S,
                 extra: tuple[str, ...] = ()) -> None:
        self.seed, self.trial = seed, trial
        self.steps = steps
        self.step_timeout_s = step_timeout_s
        self.points = plan(seed, trial, max_kills, steps, extra)
        self.rng = random.Random(f"{seed}:{trial}:script")  # the script's own choices (when to let the bridge go)
        self.built = built
        self.dir = root / f"trial-{seed}-{trial}"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.result = TrialResult(seed, trial, [str(p) for p in self.points], dir=str(self.dir))
        self.tw: ThreadedLocalWorld | None = None
        self.life: Life | None = None
        self.lives = 0
        self.env: dict[str, str] = {}
        self.state: StateDir | None = None
        self.first_nonce = 0
        self.armed: KillPoint | None = None
        self.armed_at = 0.0
        self.baseline: dict[str, Any] = {}
        self._killed = threading.Event()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._resumed_life = 0
        self._lever_mark = (0, 0)  # (life, instructions finished in it) when the step's lever moved
        self._usdt_before: dict[str, Decimal] = {}  # each venue's USDT before the margin top-up's lever

    # --- running ----------------------------------------------------------------------------------------------

    def run(self) -> TrialResult:
        started = time.monotonic()
        self.tw = ThreadedLocalWorld(LocalWorld(self.dir / "world", built=self.built)).start()
        try:
            self.env = {**self.tw.env, "BASISD_STRATEGY__DECISION_INTERVAL_S": str(DECISION_INTERVAL_S),
                        "BASISD_RISK__LTV_WARN_ABOVE_TARGET": str(LTV_WARN_ABOVE_TARGET),
                        "BASISD_RISK__LTV_ACT_ABOVE_TARGET": str(LTV_ACT_ABOVE_TARGET)}
            self.state = StateDir(Path(self.env["BASISD_RUNTIME__STATE_DIR"]))
            chain = self.tw.world.chain
            assert chain is not None
            self.first_nonce = self.tw.run(chain.w3.eth.get_transaction_count(self.tw.world.wallet))
            self._start_life()
            for step in self.steps:
                if self.result.steps and any(v != "done" for v in self.result.steps.values()) and \
                        step != self.steps[-1]:
                    self.result.steps[step] = "skipped (an earlier step was not done): straight to the flatten"
                    continue
                self._step(step)
            self._check()
        except Exception as e:  # a trial that cannot go on is a failed trial, with why
            where = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                               for f in reversed(traceback.extract_tb(e.__traceback__)[-6:]))
            self.result.violations.append(f"runner: {type(e).__name__}: {e} (at {where})"[:3000])
        finally:
            self._finish()
            self.result.elapsed_s = round(time.monotonic() - started, 1)
        return self.result

    def _start_life(self) -> None:
        if self.life is not None:
            self.life.close()
        self.lives += 1
        self.life = Life(self.lives, self.dir, self.env)
        self.life.ready()

    def _arm(self, step: str) -> None:
        """The next kill point of this step, if any, armed from now."""
        self.armed = None
        # A point of an earlier step (not fired there, or that step skipped) is overdue: it is armed now.
        if self.points and self.steps.index(self.points[0].step) <= self.steps.index(step):
            self.armed = self.points.pop(0)
            self.armed_at = time.monotonic()
            assert self.state is not None
            self.baseline = self.state.counts()
            if self.armed.kind == "transfer":
                self._bridge(paused=True)
            self._start_watch()

    def _bridge(self, *, paused: bool) -> None:
        assert self.tw is not None
        bridge = self.tw.world.bridge
        assert bridge is not None

        def set_paused() -> None:
            bridge.paused = paused

        self.tw.call(set_paused)

    def _fires(self) -> str | None:
        """What the armed point's condition saw, or None."""
        point, state = self.armed, self.state
        if point is None or state is None:
            return None
        if point.kind == "time":
            elapsed = time.monotonic() - self.armed_at
            return f"{elapsed:.3f}s after arming" if elapsed >= point.at_s else None
        if point.kind == "intent":
            new = state.intents() - self.baseline["intent"]
            return f"{new} new order intent(s)" if new >= point.nth else None
        if point.kind == "tx":
            new = state.tx_rows() - self.baseline["tx"]
            return f"{new} new journaled transaction(s)" if new >= point.nth else None
        if point.kind == "flash":
            new = state.flash_rows() - self.baseline["flash"]
            return "the atomic (flash-loan) transaction journaled" if new >= 1 else None
        if point.kind == "fill":
            gap = state.unbooked_fills() - self.baseline["fill"]
            return f"order {sorted(gap)[0]} journaled filled, its fill not yet" if gap else None
        moving = state.transfers_in_flight() - self.baseline["transfer"]
        return f"transfer in flight: {sorted(moving)[0]}" if moving else None

    def _watch(self) -> None:
        """The watcher thread: polls the armed point's condition every millisecond and kills the daemon the instant
        it holds (the main thread may be blocked in a control command meanwhile)."""
        while not self._stop_watch.is_set():
            seen = self._fires()
            life, point = self.life, self.armed
            if seen is not None and life is not None and point is not None:
                if life.alive():
                    # Said before the kill: the main thread must not take the dead daemon for one that exited.
                    self._killed.set()
                    self.result.kills.append(Kill(life.n, str(point), round(time.monotonic() - life.started, 3),
                                                  seen))
                    life.kill()
                return
            time.sleep(POLL_S)

    def _start_watch(self) -> None:
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="kill9-watch", daemon=True)
        self._watcher.start()

    def _end_watch(self) -> None:
        if self._watcher is not None:
            self._stop_watch.set()
            self._watcher.join(5)
            self._watcher = None

    def _kill_if_due(self) -> bool:
        """After the watcher killed the daemon: restart it on the same state directory, arm the step's next point."""
        if not self._killed.is_set():
            return False
        self._end_watch()
        self._killed.clear()
        point = self.armed
        assert point is not None
        let_go_before = self.rng.random() < 0.5
        if point.kind == "transfer" and let_go_before:
            self._bridge(paused=False)  # the deposit lands while the daemon is down
        self._start_life()
        if point.kind == "transfer" and not let_go_before:
            self._bridge(paused=False)  # ... or after it came back
        self._arm(point.step)  # the step's next point, armed in the new life
        return True

    def _halted_by_daemon(self, step: str) -> None:
        """The daemon halted itself (a breaker, a start-up check) where the script wants it trading: a violation
        (a restart must come back to the venues' truth and trade on), said once per life with the daemon's reason;
        then the operator's `basisd resume`, so that the script and its kill points go on."""
        assert self.life is not None
        changes = [e for e in self.life.proc.events() if e.get("event") == "trading_state_changed"]
        if not changes or changes[-1].get("current") != "HALTED" or changes[-1].get("source") == "operator":
            return
        if self._resumed_life != self.life.n:
            self._resumed_life = self.life.n
            self.result.self_halts += 1
            self.result.violations.append(f"{step}: life {self.life.n} halted itself ({changes[-1].get('source')}): "
                                          f"{changes[-1].get('reason')}")
        basisd(self.env, "resume", "--reason", "chaos script: operator resumes after a self-halt")

    def _step(self, step: str) -> None:
        self._arm(step)
        begin: dict[str, Callable[[], bool]] = {
            "entry": lambda: True, "rebalance": self._lever, "margin_topup": self._margin_lever,
            "deleverage": self._deleverage_lever, "halt_resume": self._halt_and_resume, "flatten": self._flatten}
        done: dict[str, Callable[[Truth], bool]] = {
            "entry": lambda t: t.entered(), "rebalance": self._rebalanced, "margin_topup": self._margin_restored,
            "deleverage": self._deleveraged, "halt_resume": lambda t: self._trading() == "ACTIVE",
            "flatten": lambda t: t.flat()}
        sent = begin[step]()
        deadline = time.monotonic() + self.step_timeout_s
        held_since: float | None = None
        last_truth = 0.0
        while time.monotonic() < deadline:
            if self._kill_if_due():
                held_since = None
                sent = False  # a command lost with the daemon is sent again to the new one
                continue
            if self._exited(step) or self._killed.is_set():
                continue
            assert self.life is not None
            if time.monotonic() - last_truth < 0.25:
                time.sleep(POLL_S)
                continue
            last_truth = time.monotonic()
            if not sent and step in ("halt_resume", "flatten"):
                sent = begin[step]()
            if step in TRADING_STEPS:
                self._halted_by_daemon(step)
            truth = read_truth(self._tw)
            if done[step](truth) and not self.life.in_flight():
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since >= SETTLE_S:
                    self.result.steps[step] = "done"
                    break
            else:
                held_since = None
        else:
            truth = read_truth(self._tw)
            assert self.life is not None
            self.result.steps[step] = (f"not done in {self.step_timeout_s:g}s (trading {self._trading()}; world: "
                                       f"{truth.describe()}; in flight: {sorted(self.life.in_flight())})")
            self.result.violations.append(f"{step}: {self.result.steps[step]}")
        self._end_step(step)

    def _exited(self, step: str) -> bool:
        """The daemon died by itself (not by our kill): a violation, and a new life to go on with."""
        assert self.life is not None
        if self.life.alive() or self._killed.is_set():
            return False
        self.result.violations.append(f"{step}: the daemon exited ({self.life.proc.proc.returncode}): "
                                      + self.life.proc.output()[-600:])
        self.result.steps[step] = "daemon exited"
        self._start_life()
        return True

    def _end_step(self, step: str) -> None:
        self._end_watch()
        if self._killed.is_set():  # fired as the step ended: the daemon is restarted for what follows
            self._kill_if_due()
            self._end_watch()
        if self.armed is not None and self.armed.kind == "transfer":
            self._bridge(paused=False)
        if self.armed is not None and step != self.steps[-1]:  # not fired in its step: it moves to the next
            following = self.steps[self.steps.index(step) + 1]
            self.points.insert(0, KillPoint(following, self.armed.kind, self.armed.nth, self.armed.at_s))
        self.armed = None

    @property
    def _tw(self) -> ThreadedLocalWorld:
        assert self.tw is not None
        return self.tw

    def _trading(self) -> str:
        answer = basisd(self.env, "status")
        return str(answer.get("trading")) if answer else "unknown (no answer)"

    # --- the script's steps -----------------------------------------------------------------------------------

    def _lever(self) -> bool:
        """The rebalance's cause: the LST's rate up (the collateral grows in ETH, the hedge falls short) and one
        funding payment on every venue's perp."""
        levers.set_lst_rate(self._tw, LST, levers.lst_rate(self._tw, LST) * LST_RATE_STEP)
        levers.settle_funding(self._tw, FUNDING_RATE)
        self._mark_lever()
        return True

    def _mark_lever(self) -> None:
        assert self.life is not None
        self._lever_mark = (self.life.n, len(self.life.finished()))

    def _ran_since_lever(self) -> bool:
        """An instruction has finished since the step's lever moved, in some life (a restart counts: the new life
        decides afresh on the moved world)."""
        assert self.life is not None
        life, finished = self._lever_mark
        return self.life.n != life or len(self.life.finished()) > finished

    def _rebalanced(self, truth: Truth) -> bool:
        """Hedged again, at the LST's new value (an instruction has run since the lever, in some life)."""
        return self._ran_since_lever() and truth.entered()

    def _margin_lever(self) -> bool:
        """The margin top-up's cause: ETH up on the chain and every venue together, in steps (levers.move_eth_price),
        until the venue whose short has lost most of its margin is at MARGIN_LEVER_RATIO. A short's ratio at price
        P is K/P − 1 with K = (USDT + |s|·entry)/|s| = (ratio + 1)·mark: the target is min over venues of
        K / (1 + MARGIN_LEVER_RATIO)."""
        truth = read_truth(self._tw)
        shorts = {v: r for v, r in truth.margins.items() if truth.perps[instrument(v)] < 0}
        if not shorts:
            raise RuntimeError(f"margin_topup: no short to lever ({truth.describe()})")
        self._usdt_before = dict(truth.usdt)
        target = min((r + 1) * truth.eth_price for r in shorts.values()) / (1 + MARGIN_LEVER_RATIO)
        levers.move_eth_price(self._tw, target)
        self._mark_lever()
        return True

    def _margin_restored(self, truth: Truth) -> bool:
        """Every venue's margin ratio back above MARGIN_RESTORED with USDT arrived on some venue (the long leg sold
        there), and the book hedged."""
        arrived = any(u > self._usdt_before.get(v, D(0)) + 1 for v, u in truth.usdt.items())
        restored = bool(truth.margins) and min(truth.margins.values()) >= MARGIN_RESTORED
        return self._ran_since_lever() and arrived and restored and truth.entered()

    def _deleverage_lever(self) -> bool:
        """The deleverage's cause: the LST's rate down (the collateral falls at the oracle, the debt does not) until
        the Pool's LTV is LTV_LEVER_ABOVE_TARGET above λ, past the act band the script's daemon runs with."""
        truth = read_truth(self._tw)
        if truth.ltv <= 0:
            raise RuntimeError(f"deleverage: no AAVE loop to lever ({truth.describe()})")
        factor = truth.ltv / (TARGET_LTV + LTV_LEVER_ABOVE_TARGET)
        rate = levers.lst_rate(self._tw, LST) * factor
        levers.set_lst_rate(self._tw, LST, rate.quantize(D("0.000001"), rounding=ROUND_DOWN))
        self._mark_lever()
        return True

    def _deleveraged(self, truth: Truth) -> bool:
        """The Pool's LTV back within the warn band of λ (REDUCE_LTV repays to λ), and the book hedged."""
        in_band = truth.debt_usd > 0 and abs(truth.ltv - TARGET_LTV) <= LTV_WARN_ABOVE_TARGET
        return self._ran_since_lever() and in_band and truth.entered()

    def _halt_and_resume(self) -> bool:
        halted = basisd(self.env, "halt", "--reason", "chaos script")
        resumed = basisd(self.env, "resume", "--reason", "chaos script")
        return bool(halted and resumed and not halted.get("failed") and not resumed.get("failed"))

    def _flatten(self) -> bool:
        answer = basisd(self.env, "flatten", "--reason", "chaos script")
        return bool(answer and not answer.get("failed"))

    # --- the end: the books against the world's truth ---------------------------------------------------------

    def _check(self) -> None:
        truth = read_truth(self._tw)
        self.result.books_equal_truth = self._check_books(truth)
        self._check_orders(truth)
        self._check_transactions()
        self._check_fills(truth)

    def _check_books(self, truth: Truth) -> bool:
        """`basisd reconcile` clean, and the daemon's perps and AAVE legs equal to what the world holds."""
        r, life = self.result, self.life
        assert life is not None
        books_ok = True
        answer = None
        for _ in range(3):
            answer = basisd(self.env, "reconcile")
            if answer and answer.get("ok"):
                break
            time.sleep(1)
        if not (answer and answer.get("ok") and answer.get("clean")):
            books_ok = False
            r.violations.append(f"reconcile not clean: {json.dumps(answer)[:1500]}")
        status = basisd(self.env, "status") or {}
        booked = {p["instrument"]: D(p["quantity"]) for p in
                  status.get("status", {}).get("portfolio", {}).get("positions", [])}
        for inst, size in truth.perps.items():
            if booked.get(inst, D(0)) != size:
                books_ok = False
                r.violations.append(f"perp {inst}: books {booked.get(inst, D(0))} venue {size}")
        scrape = life.proc.scrape()
        for name, usd in (("basisd_aave_collateral_eth", truth.collateral_usd),
                          ("basisd_aave_debt_eth", truth.debt_usd)):
            value = metric_value(scrape, name)
            ours = D(str(value)) if value is not None else D(0)
            theirs = usd / truth.eth_price
            if abs(ours - theirs) > max(D("0.000001"), AAVE_TOLERANCE * theirs):
                books_ok = False
                r.violations.append(f"{name}: books {ours} chain {theirs:.6f}")
        return books_ok

    def _check_orders(self, truth: Truth) -> None:
        """One order per client id at the fake, and each one an intent some run journaled."""
        r, state = self.result, self.state
        assert state is not None
        intents = {row[0] for row in _rows(state.journal, "SELECT client_order_id FROM orders WHERE event = 'intent'")}
        seen = Counter(cid for _, cid, _, _ in truth.orders)
        r.duplicate_orders = sum(n - 1 for n in seen.values() if n > 1)
        r.violations += [f"duplicate order: client id {cid} on {n} orders" for cid, n in seen.items() if n > 1]
        unintended = [(v, cid, m, s) for v, cid, m, s in truth.orders if from_venue(cid) not in intents]
        r.unintended_orders = len(unintended)
        r.violations += [f"unintended order: {v} {m} {s} client id {cid} ({from_venue(cid)}): no intent journaled"
                         for v, cid, m, s in unintended]
        r.resent_client_ids = self._resent_client_ids()

    def _check_transactions(self) -> None:
        """One transaction per nonce in the blocks and in the journal's mined rows; none the journal never saw."""
        r, state = self.result, self.state
        assert state is not None
        on_chain = wallet_transactions(self._tw, self.first_nonce)
        by_nonce = Counter(n for n, _ in on_chain)
        mined = Counter(int(n) for (n,) in _rows(state.txs, "SELECT nonce FROM chain_txs WHERE state = 'mined'"))
        r.duplicate_txs = sum(n - 1 for n in by_nonce.values() if n > 1) + sum(n - 1 for n in mined.values() if n > 1)
        r.violations += [f"duplicate transaction in the blocks: nonce {k} x{n}" for k, n in by_nonce.items() if n > 1]
        r.violations += [f"nonce {k} journaled as mined {n} times" for k, n in mined.items() if n > 1]
        journaled = {str(h).lower() for (h,) in _rows(state.txs, "SELECT tx_hash FROM chain_txs")}
        unjournaled = [(n, h) for n, h in on_chain if h.lower() not in journaled]
        r.unjournaled_txs = len(unjournaled)
        r.violations += [f"unjournaled transaction: nonce {n} {h}" for n, h in unjournaled]

    def _check_fills(self, truth: Truth) -> None:
        """Every trade the fake executed journaled as a FillReport by exactly one run (the key is venue:trade id,
        a spot trade's id prefixed with its venue)."""
        r, state = self.result, self.state
        assert state is not None
        reports: Counter[tuple[str, str]] = Counter()
        for venue, key in _rows(state.journal, "SELECT venue, report_key FROM venue_reports WHERE kind = 'FillReport'"):
            reports[(venue, key.rsplit("-", 1)[-1].rsplit(":", 1)[-1])] += 1
        for venue, trade_id, market in truth.trades:
            n = reports.get((venue, str(trade_id)), 0)
            if n == 0:
                r.lost_fills += 1
                r.violations.append(f"lost fill: {venue} {market} trade {trade_id} never journaled")
            elif n > 1:
                r.fills_booked_twice += 1
                r.violations.append(f"fill booked twice: {venue} {market} trade {trade_id} in {n} runs")

    def _resent_client_ids(self) -> int:
        """Order requests the fake was sent more than once under one client id (each refused as a duplicate after
        the first): a resend, not a violation by itself (the fake holds one order), counted for the report."""
        fake = self._tw.world.fake
        assert fake is not None

        def count() -> int:
            ids: Counter[str] = Counter()
            for request in fake.requests:
                if request.method != "POST":
                    continue
                cid = request.params.get("newClientOrderId") or request.params.get("orderLinkId") or \
                    request.params.get("clOrdId")
                if cid:
                    ids[cid] += 1
            return sum(n - 1 for n in ids.values() if n > 1)

        return self._tw.call(count)

    def _finish(self) -> None:
        self._end_watch()
        if self.life is not None:
            with contextlib.suppress(Exception):
                self.life.stop()
            self.life.close()
        if self.tw is not None:
            with contextlib.suppress(Exception):
                self.tw.stop()


# --- the command --------------------------------------------------------------------------------------------------


def run_trials(trials: int, seed: int, max_kills: int, root: Path, only: int | None = None,
               out: Callable[[str], None] = print, steps: tuple[str, ...] = STEPS,
               step_timeout_s: float = STEP_TIMEOUT_S, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    built = build_world()
    results = []
    indices = [only] if only is not None else list(range(trials))
    for i in indices:
        result = Trial(seed, i, max_kills, built, root, steps, step_timeout_s, extra).run()
        results.append(result)
        kills = "; ".join(f"life {k.life} {k.point} ({k.seen})" for k in result.kills) or "none"
        out(f"trial {i} seed {seed}: {'ok' if result.ok else 'FAILED'} in {result.elapsed_s}s, kills: {kills}")
        if not result.ok:
            out(json.dumps({"failed_trial": result.summary()}, default=str))
    kinds = Counter(k.point.split(":")[1].split()[0] for r in results for k in r.kills)
    return {"trials": len(results), "books_equal_truth": sum(r.books_equal_truth for r in results),
            "duplicate_orders": sum(r.duplicate_orders for r in results),
            "duplicate_txs": sum(r.duplicate_txs for r in results),
            "lost_fills": sum(r.lost_fills for r in results),
            "kills": sum(len(r.kills) for r in results), "seed": seed,
            "unintended_orders": sum(r.unintended_orders for r in results),
            "unjournaled_txs": sum(r.unjournaled_txs for r in results),
            "fills_booked_twice": sum(r.fills_booked_twice for r in results),
            "resent_client_ids": sum(r.resent_client_ids for r in results),
            "self_halts": sum(r.self_halts for r in results),
            "steps_not_done": sum(v != "done" for r in results for v in r.steps.values()),
            "kills_by_kind": dict(sorted(kinds.items())),
            "failed_trials": [r.trial for r in results if not r.ok],
            "elapsed_s": round(sum(r.elapsed_s for r in results), 1)}


def clean(summary: dict[str, Any]) -> bool:
    return summary["books_equal_truth"] == summary["trials"] and not summary["failed_trials"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.kill9", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-kills", type=int, default=3, help="kill points per trial: 1..this (0: none)")
    parser.add_argument("--only", type=int, default=None, metavar="T", help="run trial T of the seed alone")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"the script's steps, in order (default: all: "
                                                                  f"{','.join(STEPS)})")
    parser.add_argument("--step-timeout", type=float, default=STEP_TIMEOUT_S, metavar="SECONDS",
                        help="a step the world does not show done by then is a violation (the trial goes on to "
                             "the flatten)")
    parser.add_argument("--extra-kinds", default="",
                        help=f"opt-in kill kinds, comma-separated ({', '.join(EXTRA_KINDS)}): one more point each")
    parser.add_argument("--dir", type=Path, default=None, help="where the trials' worlds and logs go (kept)")
    args = parser.parse_args(argv)
    root = args.dir or Path(tempfile.mkdtemp(prefix="chaos-kill9-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"kill9: seed {args.seed}, {args.trials} trial(s), up to {args.max_kills} kill(s) each, in {root}",
          flush=True)
    steps = tuple(args.steps.split(","))
    if not steps or any(s not in STEPS for s in steps):
        parser.error(f"--steps: a comma-separated list of {', '.join(STEPS)}")
    extra = tuple(k for k in args.extra_kinds.split(",") if k)
    if any(k not in EXTRA_KINDS for k in extra):
        parser.error(f"--extra-kinds: a comma-separated list of {', '.join(EXTRA_KINDS)}")
    summary = run_trials(args.trials, args.seed, args.max_kills, root, args.only,
                         out=lambda line: print(line, flush=True), steps=steps, step_timeout_s=args.step_timeout,
                         extra=extra)
    print(json.dumps(summary), flush=True)
    return 0 if clean(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
