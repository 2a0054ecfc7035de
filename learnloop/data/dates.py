"""Human-written dates -> ISO 8601 (YYYY-MM-DD): a seeded generator for the date-translation task
(the neural machine translation exercise of Bahdanau et al., 2015 style attention courses).

Each example draws a uniform day between 1950-01-01 and 2049-12-31 and one of `FORMATS`, written the way
people do ("3 May 1999", "Tuesday, May 3, 1999", "05/03/99", "3rd of may 1999", "03.05.1999" ...). Every
format is unambiguous by convention: slashes are US month/day order, dots are day.month order, and
two-digit years pivot at 50 (50..99 -> 19xx, 00..49 -> 20xx). Capitalisation varies.
"""

from __future__ import annotations

import datetime as dt
import random

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
START, END = dt.date(1950, 1, 1), dt.date(2049, 12, 31)


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _formats():
    def m(d):
        return MONTHS[d.month - 1]

    def mon(d):
        return MONTHS[d.month - 1][:3]

    def wd(d):
        return DAYS[d.weekday()]

    return {
        "d MMMM yyyy": lambda d: f"{d.day} {m(d)} {d.year}",
        "dd MMMM yyyy": lambda d: f"{d.day:02d} {m(d)} {d.year}",
        "d MMM yyyy": lambda d: f"{d.day} {mon(d)} {d.year}",
        "d MMM, yyyy": lambda d: f"{d.day} {mon(d)}, {d.year}",
        "MMMM d, yyyy": lambda d: f"{m(d)} {d.day}, {d.year}",
        "MMMM d yyyy": lambda d: f"{m(d)} {d.day} {d.year}",
        "MMM d, yyyy": lambda d: f"{mon(d)} {d.day}, {d.year}",
        "EEEE, MMMM d, yyyy": lambda d: f"{wd(d)}, {m(d)} {d.day}, {d.year}",
        "EEE d MMM yyyy": lambda d: f"{wd(d)[:3]} {d.day} {mon(d)} {d.year}",
        "EEEE d MMMM yyyy": lambda d: f"{wd(d)} {d.day} {m(d)} {d.year}",
        "M/d/yy": lambda d: f"{d.month}/{d.day}/{d.year % 100:02d}",
        "MM/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
        "dd.MM.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
        "d.M.yy": lambda d: f"{d.day}.{d.month}.{d.year % 100:02d}",
        "yyyy/MM/dd": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
        "ordinal of MMMM yyyy": lambda d: f"{_ordinal(d.day)} of {m(d)} {d.year}",
        "the ordinal of MMMM, yyyy": lambda d: f"the {_ordinal(d.day)} of {m(d)}, {d.year}",
        "MMMM ordinal, yyyy": lambda d: f"{m(d)} {_ordinal(d.day)}, {d.year}",
        "d-MMM-yy": lambda d: f"{d.day}-{mon(d)}-{d.year % 100:02d}",
        "MMM yyyy d": lambda d: f"{mon(d)} {d.year} {d.day}",
    }


FORMATS = _formats()


def random_date(rng: random.Random) -> dt.date:
    return START + dt.timedelta(days=rng.randrange((END - START).days + 1))


def humanize(date: dt.date, fmt: str, case: str = "as-is") -> str:
    text = FORMATS[fmt](date)
    return {"as-is": text, "lower": text.lower(), "upper": text.upper()}[case]


def make_dates(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n (human-written date, ISO date) pairs, a pure function of (n, seed)."""
    rng = random.Random(seed)
    names = list(FORMATS)
    out = []
    for _ in range(n):
        d = random_date(rng)
        case = rng.choices(["as-is", "lower", "upper"], weights=[6, 3, 1])[0]
        out.append((humanize(d, rng.choice(names), case), d.isoformat()))
    return out
