"""EtherFi reward distributions as discrete events, and the base staking yield of the LSTs.

Reward events (ADR-18, DOMAIN §5). `staking/distributions/etherfi_seasonal_rewards_*.csv` holds four kinds of
row, told apart by `reward_type` (`event_name`, `distribution_mechanism` and `data_source` agree with it):

| reward_type              | kind     | token | amount column           | rows | data_quality |
|--------------------------|----------|-------|-------------------------|------|--------------|
| `EIGEN_via_KING`         | weekly   | EIGEN | `eigen_per_eeth_weekly` | 44   | exact        |
| `ETHFI_via_KING`         | topup    | ETHFI | `ethfi_per_eeth`        | 7    | exact        |
| `ETHFI_Seasonal_Airdrop` | seasonal | ETHFI | `ethfi_per_eeth`        | 5    | estimated    |
| `EIGEN_via_DEFILLAMA`    | estimate | ETH   | `daily_yield_pct`       | 58   | estimated    |

Every event is discrete: on its payout a holder receives `per_eeth` × its average eETH-equivalent balance over
the period (a weETH holder's eETH equivalent is its weETH × the weETH/ETH oracle rate). `per_eeth` is always
the total for the event, parsed exactly from the file's text. The rest of the row is not used: its USD and ETH
prices are placeholders (EIGEN fixed at 3.5, ETHFI at 2.8, DOMAIN §7), its `daily_yield_*` columns divide the
first EIGEN row by 7 days although it spans 52, and `period_days` counts end − start (6 for a 7-day week, but
1 for the one-day estimate rows), so the period is taken from its dates.

What `eigen_per_eeth_weekly` means. EtherFi's own table (KING rewards distribution, the source of
`eigen_distributions_raw.csv`) heads the column "EIGEN/eETH distributed / week" and notes that "the first rewards
are for 6 weeks of staking periods". The raw file agrees: the EIGEN earned over all eETH (restaked + not yet
restaked) gives the figure within 1.5 % for every week from 2024-10-06 to 2025-02-08 (later weeks publish 4–9 %
more, once 22 %), and gives 2,478,088 / 2,012,794 = 1.2312 per eETH for 2024-08-15..2024-10-05 — 6.006 ×
0.205. ETHFI top-ups use the same denominator: 500,000 ETHFI / 2,012,794 eETH = 0.2484, the published 0.248 for
that same period, so the per-eETH top-up figure is a total for its period and is never scaled. Hence:

- a period of at most `ONE_DISTRIBUTION_MAX_DAYS` (8) days is one weekly distribution, and the figure is its
  total. The figure already follows the period's length: 0.127 for the 5-day 2025-07-08..12 and 0.211 for the
  8-day 2025-06-22..29, against ~0.18–0.19 for the 7-day weeks around them; scaling it again by days/7 would
  count the length twice;
- a longer period (only the first, 52 days) pays the weekly figure once per week of rewards it covers, and the
  number of weeks comes from `eigen_distributions_raw.csv` (EIGEN earned ÷ all eETH ÷ the figure, which must be
  within 0.1 of a whole number): 6, so 0.205 × 6 = 1.230 EIGEN per eETH. days/7 (0.205 × 52/7 = 1.52) would
  overstate it by 24 %; the figure alone (0.205) would understate it six times.

The `estimate` rows are not token amounts: they are DeFiLlama's EIGEN reward APY turned into a daily value
yield (`daily_yield_pct` = ln(1 + APY)/365, a fraction of the position's value per day, not a percent), so
their token is "ETH" and `per_eeth` is ETH per eETH for the period. They cover 2025-08-03..2025-09-29, after
the last exact EIGEN distribution (period ending 2025-08-02).

Instants. `period_start_ns` is 00:00 UTC of `period_start`; the end date is inclusive, so `period_end_ns` is the
end of that day, 00:00 UTC of the next day, exclusive: the balance is averaged over [start, end). The payout is
00:00 UTC of `payout_date`, but never before the period has ended: the EIGEN rows give the period's last day
as their payout date, and paying at its 00:00 would use 24 h of balance not yet held, so those payouts move to
`period_end_ns` (real distributions came later still: EigenLayer's pipeline delays rewards up to 16 days).

Reward modes (ADR-9): `base_only` has no events, `base_eigen` the weekly EIGEN distributions, and
`base_eigen_seasonal` those plus the ETHFI top-ups and any seasonal drop whose amount is exact — none in this
data: the five seasons are estimates (midpoints of published ranges such as "~5–15").

Reward-token prices are catalogued in `daemon.data.history` as `spot:EIGEN/ETH` and `spot:ETHFI/ETH`, ETH per
one token, from the Uniswap v3 EIGEN/WETH and ETHFI/WETH hourly pools (base = the token, quote = WETH, taken
1:1 with ETH): 0.00148 WETH per EIGEN × $2,420 = $3.58 on 2024-10-05, and over the backtest window
2024-05-12..2025-09-18 EIGEN stays within $0.67–5.60 and ETHFI within $0.40–5.31, so the files are not inverted.
ETHFI's file (2024-04-01 00:00 → 2025-09-27 18:00, no gap) covers the whole window. EIGEN's starts on
2024-10-05 00:00 (→ 2025-09-27 18:00, no gap): before it there is no EIGEN price, and no EIGEN was paid either —
the first distribution's payout date is 2024-10-05 (moved to 2024-10-06 00:00 above).

Staking yields. `read_staking_yields` gives one value per day, stamped at the end of that day (00:00 UTC of the
next), when the last oracle price it is computed from (23:00) is known; the file stamps it at the day's own
00:00, which would look 24 h ahead. For weETH it is the file's `base_staking_apr`, which is in fact compounded:
it equals (1 + daily_yield)^365 − 1 exactly on every row, and its daily_yield spans 00:00 → 23:00. For wstETH
the file is not used: it is irregular hourly, misses 871 hours and has negative yields from a daily-mean ETH
price (DOMAIN §7), so the yield is derived from the wstETH/ETH oracle instead, one whole UTC day at a time, by
`oracle_staking_apr` — the function that also reports a backtest's realised staking APR over its window.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from daemon.data.history import HOUR_S, SECONDS_PER_YEAR, DataLayoutError, MissingFileError, read_series
from daemon.data.series import Series, StaleData
from daemon.data.timeparse import NS, parse_ts

REWARDS_FILE = "staking/distributions/etherfi_seasonal_rewards_*.csv"
EIGEN_RAW_FILE = "staking/distributions/eigen_distributions_raw.csv"
WEETH_YIELDS_FILE = "staking/yields/weeth_oracle_yields_*.csv"

DAY_NS = 24 * HOUR_S * NS
ONE_DISTRIBUTION_MAX_DAYS = 8  # the weekly periods run 5 to 8 days (inclusive) as the schedule shifted
DAILY_MAX_AGE_S = 25 * HOUR_S  # a daily value stays current until the next one, with an hour of slack
ORACLE_MAX_AGE_S = 2 * HOUR_S  # as `oracle:*` in the catalog

KINDS = frozenset({"weekly", "topup", "seasonal", "estimate"})
DEFAULT_KINDS = frozenset({"weekly", "topup"})
REWARD_MODES = ("base_only", "base_eigen", "base_eigen_seasonal")

# reward_type → (kind, token, the column holding the per-eETH amount)
_REWARD_TYPES: dict[str, tuple[str, str, str]] = {
    "EIGEN_via_KING": ("weekly", "EIGEN", "eigen_per_eeth_weekly"),
    "ETHFI_via_KING": ("topup", "ETHFI", "ethfi_per_eeth"),
    "ETHFI_Seasonal_Airdrop": ("seasonal", "ETHFI", "ethfi_per_eeth"),
    "EIGEN_via_DEFILLAMA": ("estimate", "ETH", "daily_yield_pct"),
}
_QUALITIES = {"exact": True, "estimated": False}


@dataclass(frozen=True, slots=True)
class RewardEvent:
    payout_ns: int  # UTC ns: 00:00 of payout_date, or the period's end if that is later (module doc)
    period_start_ns: int  # 00:00 UTC of period_start
    period_end_ns: int  # exclusive: 00:00 UTC of the day after the inclusive period_end
    token: str  # "EIGEN" | "ETHFI" ("ETH" for the value-yield estimates)
    per_eeth: Decimal  # tokens per eETH held on average over [period_start, period_end), total for the event
    kind: str  # "weekly" | "topup" | "seasonal" | "estimate"
    exact: bool  # data_quality == "exact"; the seasonal drops and the DeFiLlama rows are estimates

    def tokens_for(self, average_eeth: Decimal) -> Decimal:
        """The tokens paid for an average eETH-equivalent balance (weETH × the weETH/ETH rate) over the period."""
        return self.per_eeth * average_eeth


def _find(data_dir: Path, pattern: str) -> Path:
    matches = sorted(p for p in data_dir.glob(pattern) if p.is_file())
    if not matches:
        raise MissingFileError(f"no file matches {data_dir / pattern}")
    return matches[0]


def _numbered_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows with their line number in the file, `#` comment lines skipped (and counted)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            kept = [(n, line) for n, line in enumerate(f, start=1) if not line.startswith("#")]
    except OSError as exc:
        raise MissingFileError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise DataLayoutError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    reader = csv.DictReader(line for _, line in kept)
    try:
        for row in reader:
            yield kept[reader.line_num - 1][0], row
    except csv.Error as exc:  # e.g. a NUL byte
        raise DataLayoutError(f"{path}:{kept[min(reader.line_num, len(kept)) - 1][0]}: {exc}") from None


def _field(row: dict[str, str], column: str) -> str:
    value = row.get(column)
    if value is None:
        raise DataLayoutError(f"no column {column!r}")
    if not value.strip():
        raise ValueError(f"empty {column}")
    return value.strip()


def _amount(row: dict[str, str], column: str) -> Decimal:
    text = _field(row, column)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{column} {text!r} is not a finite non-negative amount")
    return value


def _day(row: dict[str, str], column: str) -> int:
    t = parse_ts(_field(row, column))
    if t % DAY_NS:
        raise ValueError(f"{column} {row[column]!r} is not a date")
    return t


def read_reward_events(data_dir: Path, include: frozenset[str] = DEFAULT_KINDS) -> tuple[RewardEvent, ...]:
    """The reward events of the kinds in `include`, sorted by payout, duplicates dropped (module doc)."""
    unknown = include - KINDS
    if unknown:
        raise ValueError(f"unknown reward kinds {sorted(unknown)} (known: {', '.join(sorted(KINDS))})")
    path = _find(data_dir, REWARDS_FILE)
    weeks = _WeeksCovered(data_dir)
    seen: dict[tuple[str, str, int, int, int], tuple[int, RewardEvent]] = {}
    for line, row in _numbered_rows(path):
        try:
            event = _event(row, weeks)
        except ValueError as exc:  # DataLayoutError and BadTimestamp included
            raise DataLayoutError(f"{path}:{line}: {exc}") from None
        if event.kind not in include:
            continue
        key = (event.kind, event.token, event.period_start_ns, event.period_end_ns, event.payout_ns)
        if key in seen:
            first_line, first = seen[key]
            if first != event:
                raise DataLayoutError(f"{path}:{line}: a second {event.kind} {event.token} event for the period "
                                      f"of line {first_line} with another amount ({event.per_eeth} vs "
                                      f"{first.per_eeth})")
            continue
        seen[key] = (line, event)
    return tuple(sorted((e for _, e in seen.values()),
                        key=lambda e: (e.payout_ns, e.period_start_ns, e.token, e.kind)))


def _event(row: dict[str, str], weeks: _WeeksCovered) -> RewardEvent:
    kind, token, column = _kind(row)
    start, end = _day(row, "period_start"), _day(row, "period_end") + DAY_NS
    if end <= start:
        raise ValueError(f"period_end {row['period_end']} is before period_start {row['period_start']}")
    payout = max(_day(row, "payout_date"), end)
    per_eeth = _amount(row, column)
    quality = _field(row, "data_quality")
    if quality not in _QUALITIES:
        raise ValueError(f"unknown data_quality {quality!r} (known: {', '.join(_QUALITIES)})")
    days = (end - start) // DAY_NS
    if kind == "estimate":
        per_eeth *= days  # a daily value yield, over every day of the period
    elif kind == "weekly" and days > ONE_DISTRIBUTION_MAX_DAYS:
        per_eeth *= weeks.of(start, end, f"{row['period_start']}..{row['period_end']}")
    return RewardEvent(payout, start, end, token, per_eeth, kind, _QUALITIES[quality])


def _kind(row: dict[str, str]) -> tuple[str, str, str]:
    reward_type = _field(row, "reward_type")
    try:
        return _REWARD_TYPES[reward_type]
    except KeyError:
        raise ValueError(f"unknown reward_type {reward_type!r} (known: {', '.join(_REWARD_TYPES)})") from None


class _WeeksCovered:
    """Per long EIGEN period of the raw EtherFi table: how many weekly figures its EIGEN earned amounts to.

    Read only when the rewards file has such a period (the raw file is EIGEN earned ÷ all eETH ÷ the figure).
    """

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        self._weeks: dict[tuple[int, int], int] | None = None

    def of(self, start: int, end: int, period: str) -> int:
        why = f"the {(end - start) // DAY_NS}-day EIGEN period {period} pays its weekly figure once per week of " \
              f"rewards"
        if self._weeks is None:
            try:
                self._weeks = self._read()
            except DataLayoutError as exc:  # a missing file stays a missing file (exit 66)
                raise type(exc)(f"{why}, counted in {EIGEN_RAW_FILE}: {exc}") from None
        try:
            return self._weeks[(start, end)]
        except KeyError:
            raise DataLayoutError(f"{why}, and {EIGEN_RAW_FILE} has no row saying how many") from None

    def _read(self) -> dict[tuple[int, int], int]:
        path = _find(self._dir, EIGEN_RAW_FILE)
        weeks: dict[tuple[int, int], int] = {}
        for line, row in _numbered_rows(path):
            try:
                start, end = _day(row, "staking_period_start"), _day(row, "staking_period_end") + DAY_NS
                if (end - start) // DAY_NS <= ONE_DISTRIBUTION_MAX_DAYS:
                    continue  # one distribution: its figure is its total, the raw ratio is not needed
                eeth = _amount(row, "eth_restaked") + _amount(row, "eth_not_restaked")
                figure = _amount(row, "eigen_per_eeth_weekly")
                if eeth == 0 or figure == 0:
                    raise ValueError("no eETH or no weekly figure to divide by")
                ratio = _amount(row, "eigen_earned") / eeth / figure
                if round(ratio) < 1 or abs(ratio - round(ratio)) > Decimal("0.1"):
                    raise ValueError(f"EIGEN earned per eETH is {ratio:.3f} times the weekly figure, not a whole "
                                     f"number of weeks")
            except ValueError as exc:
                raise DataLayoutError(f"{path}:{line}: {exc}") from None
            weeks[(start, end)] = round(ratio)
        return weeks


def events_for_mode(events: Iterable[RewardEvent], rewards_mode: str) -> tuple[RewardEvent, ...]:
    """The events a reward mode (ADR-9) is paid: see the module doc."""
    if rewards_mode == "base_only":
        return ()
    if rewards_mode == "base_eigen":
        return tuple(e for e in events if e.kind == "weekly" and e.token == "EIGEN")
    if rewards_mode == "base_eigen_seasonal":
        return tuple(e for e in events if (e.kind == "weekly" and e.token == "EIGEN") or e.kind == "topup"
                     or (e.kind == "seasonal" and e.exact))
    raise ValueError(f"unknown rewards mode {rewards_mode!r} (known: {', '.join(REWARD_MODES)})")


def oracle_staking_apr(oracle: Series, start_ns: int, end_ns: int, max_age_s: float = ORACLE_MAX_AGE_S) -> float:
    """The LST/ETH oracle's growth from `start_ns` to `end_ns`, as a simple annual rate (365-day year).

    Both ends are strict as-of lookups, so a window starting before the oracle's first row is `StaleData`.
    """
    if end_ns <= start_ns:
        raise ValueError(f"the window must end after it starts ({start_ns} → {end_ns})")
    first, last = oracle.at(start_ns, max_age_s), oracle.at(end_ns, max_age_s)
    return (last / first - 1) * SECONDS_PER_YEAR * NS / (end_ns - start_ns)


def read_staking_yields(data_dir: Path, lst: str) -> Series:
    """The daily base staking APR of `lst`, each day's value stamped at the end of that day (module doc)."""
    if lst == "weETH":
        return _weeth_yields(data_dir)
    if lst == "wstETH":
        return _yields_from_oracle("staking_apr:wstETH", read_series(data_dir, "oracle:wstETH/ETH"))
    raise ValueError(f"no staking yield for {lst!r} (known: weETH, wstETH)")


def _weeth_yields(data_dir: Path) -> Series:
    path = _find(data_dir, WEETH_YIELDS_FILE)
    values = []
    for line, row in _numbered_rows(path):
        try:
            values.append((_day(row, "date") + DAY_NS, float(_field(row, "base_staking_apr"))))
        except (DataLayoutError, ValueError) as exc:
            raise DataLayoutError(f"{path}:{line}: {exc}") from None
    return Series("staking_apr:weETH", values)


def _yields_from_oracle(name: str, oracle: Series) -> Series:
    """One value per whole UTC day the oracle covers at both ends; days it does not are simply absent."""
    values = []
    day = -(-oracle.first_ns // DAY_NS) * DAY_NS
    while day + DAY_NS <= oracle.last_ns:
        with suppress(StaleData):
            values.append((day + DAY_NS, oracle_staking_apr(oracle, day, day + DAY_NS)))
        day += DAY_NS
    return Series(name, values)
