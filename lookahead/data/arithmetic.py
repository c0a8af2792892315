"""A small GSM8K-style word-problem set generated on the fly, so the default job needs no download.

Every answer shows its working with GSM8K's `<<a+b=c>>` calculator marks and ends with `#### <number>`.
The generator is pure and seeded: the same (n, seed) always gives the same problems.
"""

from __future__ import annotations

import random
import re

_NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kai", "Lena"]
_ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells"]


def _add_then_give(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    a, b = rng.randint(5, 60), rng.randint(2, 40)
    c = rng.randint(1, a + b - 1)
    total, left = a + b, a + b - c
    question = (
        f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. "
        f"How many {item} does {name} have now?"
    )
    answer = (
        f"After buying, {name} has {a} + {b} = <<{a}+{b}={total}>>{total} {item}.\n"
        f"After giving some away, {name} has {total} - {c} = <<{total}-{c}={left}>>{left} {item}.\n"
        f"#### {left}"
    )
    return question, answer


def _price_times_count(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    price, count, paid = rng.randint(2, 12), rng.randint(2, 9), 0
    cost = price * count
    paid = cost + rng.randint(0, 20)
    change = paid - cost
    question = (
        f"{name} buys {count} packs of {item} at ${price} each and pays with ${paid}. How much change does {name} get?"
    )
    answer = (
        f"The packs cost {count} x ${price} = $<<{count}*{price}={cost}>>{cost}.\n"
        f"The change is ${paid} - ${cost} = $<<{paid}-{cost}={change}>>{change}.\n"
        f"#### {change}"
    )
    return question, answer


def _share_equally(rng: random.Random) -> tuple[str, str]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    friends, each = rng.randint(2, 8), rng.randint(2, 15)
    total = friends * each
    question = f"{name} shares {total} {item} equally among {friends} friends. How many {item} does each friend get?"
    answer = f"Each friend gets {total} / {friends} = <<{total}/{friends}={each}>>{each} {item}.\n#### {each}"
    return question, answer


def _weekly_total(rng: random.Random) -> tuple[str, str]:
    name = rng.choice(_NAMES)
    per_day, days, bonus = rng.randint(3, 25), rng.randint(2, 7), rng.randint(1, 30)
    base = per_day * days
    total = base + bonus
    question = (
        f"{name} reads {per_day} pages a day for {days} days, then {bonus} more pages on Sunday. "
        f"How many pages does {name} read in total?"
    )
    answer = (
        f"On the weekdays {name} reads {per_day} x {days} = <<{per_day}*{days}={base}>>{base} pages.\n"
        f"Adding Sunday gives {base} + {bonus} = <<{base}+{bonus}={total}>>{total} pages.\n"
        f"#### {total}"
    )
    return question, answer


_TEMPLATES = (_add_then_give, _price_times_count, _share_equally, _weekly_total)


def generate_arithmetic(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Return `n` records `{"question", "answer"}` in GSM8K style.

    Example:
        >>> generate_arithmetic(1, seed=0)[0]["answer"].splitlines()[-1].startswith("#### ")
        True
    """
    rng = random.Random(seed)
    return [dict(zip(("question", "answer"), rng.choice(_TEMPLATES)(rng))) for _ in range(n)]


def question_key(question: str) -> tuple[str, tuple[int, ...]]:
    """(template, numbers) of a generated question: the names and items swapped out. Two questions with one key ask
    the same sum, so an evaluation question must not share a key with a training question."""
    shape = re.sub(r"\b(" + "|".join(_NAMES + _ITEMS) + r")\b", "_", question)
    return re.sub(r"\d+", "#", shape), tuple(int(n) for n in re.findall(r"\d+", question))


def generate_disjoint(n: int, seed: int, exclude: list[dict[str, str]]) -> list[dict[str, str]]:
    """`n` questions drawn from `generate_arithmetic(.., seed)` in order, skipping any whose `question_key` is one of
    `exclude`'s or already drawn: disjoint in template and numbers from the questions a model trained on."""
    taken = {question_key(r["question"]) for r in exclude}
    out: list[dict[str, str]] = []
    for record in generate_arithmetic(50 * n + 1000, seed=seed):  # a prefix of one seeded stream: stable in n
        key = question_key(record["question"])
        if key not in taken:
            taken.add(key)
            out.append(record)
            if len(out) == n:
                return out
    raise ValueError(f"fewer than {n} questions of seed {seed} are disjoint from the {len(exclude)} excluded")
