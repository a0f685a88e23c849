"""Generated knowledge-update conversations (seeded): a user states facts, distractor turns follow, and
later the user changes some facts, once or twice. Each fact has a question about its current value.

Four slots (a hotel budget, a home address, a favourite cuisine, a weekly meeting time), each phrased
several ways so that an update does not simply repeat the first statement's words. No value is a
substring of another value of the same conversation, and no distractor mentions any value, so "the
packed context holds this value" is a sound test of what the context says.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    values: tuple[str, ...]
    first: tuple[str, ...]  # how a value is stated the first time ({v})
    update: tuple[str, ...]  # how a changed value is stated
    question: str


SLOTS = (
    Slot(
        "budget",
        tuple(f"{n} EUR" for n in range(110, 400, 15)),
        ("My hotel budget is {v} a night.", "I can spend about {v} per night on a hotel."),
        (
            "Change of plans: my hotel budget is now {v} a night.",
            "From now on, plan hotels at {v} per night at most.",
            "Please use {v} a night as my hotel budget instead.",
        ),
        "What is my hotel budget per night?",
    ),
    Slot(
        "address",
        tuple(
            f"{n} {street}"
            for n, street in zip(
                (12, 48, 7, 95, 33, 61, 24, 80, 5, 57, 19, 72),
                (
                    "Harbour Street",
                    "Mill Lane",
                    "Castle Road",
                    "Orchard Way",
                    "Station Square",
                    "Elm Grove",
                    "Quarry Hill",
                    "Bridge End",
                    "Willow Court",
                    "Chapel Row",
                    "Market Place",
                    "Kings Walk",
                ),
                strict=True,
            )
        ),
        ("I live at {v}, that is my home address.", "Send the documents to my home, {v}."),
        (
            "We moved house; my address is {v} now.",
            "My new home address is {v}.",
            "Ship everything to my new home, {v}.",
        ),
        "What is my home address?",
    ),
    Slot(
        "cuisine",
        ("Thai", "Italian", "Ethiopian", "Georgian", "Peruvian", "Korean", "Lebanese", "Mexican", "Greek"),
        ("My favourite cuisine is {v}.", "When we eat out, I always go for {v} food."),
        (
            "These days I like {v} food best.",
            "My favourite cuisine has become {v}.",
            "For dinners, book {v} restaurants now: that is my cuisine.",
        ),
        "Which cuisine do I like most?",
    ),
    Slot(
        "meeting",
        tuple(
            f"{day} at {hour}"
            for day in ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
            for hour in ("08:30", "11:15", "15:45")
        ),
        ("My weekly team meeting is on {v}.", "The team meets every week on {v}."),
        (
            "The weekly team meeting moved to {v}.",
            "Our team now meets on {v} each week.",
            "Reschedule: team meeting is {v} from now on.",
        ),
        "When is my weekly team meeting?",
    ),
)

DISTRACTORS = (
    "The weather was grey all morning, so I stayed in.",
    "I finished the novel about the sailors, the ending was sad.",
    "Remind me to call my sister about the birthday present.",
    "The train was delayed by twenty minutes again.",
    "I started jogging in the park before work.",
    "The printer in the office is out of toner.",
    "My phone screen cracked when it fell off the desk.",
    "We watched a documentary about glaciers last night.",
    "The neighbours are renovating their kitchen, it is noisy.",
    "I need to renew my passport before the summer.",
    "The plants on the balcony need more sun.",
    "Can you summarise the article about electric bikes?",
)
REPLIES = (
    "Noted, I will keep that in mind.",
    "Sure, let me know if anything else changes.",
    "Thanks for telling me.",
    "Understood.",
)


@dataclass(frozen=True, slots=True)
class Turn:
    key: str  # client id (idempotency key)
    role: str
    content: str
    created_at: datetime
    replaces: str | None = None  # key of the statement this one changes


@dataclass(frozen=True, slots=True)
class Question:
    session: str
    slot: str
    text: str
    current: str
    stale: tuple[str, ...]


@dataclass
class Conversation:
    session: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def _distinct(rng: random.Random, values: tuple[str, ...], n: int) -> list[str]:
    """``n`` values of which none is a substring of another."""
    while True:
        picked = rng.sample(values, n)
        if all(a == b or a not in b for a in picked for b in picked):
            return picked


def generate(n_conversations: int = 30, *, seed: int = 7, prefix: str = "upd") -> list[Conversation]:
    """``n_conversations`` conversations; in each, every slot is stated, 3 of the 4 slots change (one of
    them twice), with 2-5 distractor exchanges between statements, over about a month."""
    rng = random.Random(seed)
    out: list[Conversation] = []
    for c in range(n_conversations):
        conv = Conversation(session=f"{prefix}-{c:03d}")
        changes = dict.fromkeys((s.name for s in SLOTS), 0)
        for name in rng.sample(list(changes), 3):
            changes[name] = 1
        changes[rng.choice([n for n, k in changes.items() if k])] = 2
        values = {s.name: _distinct(rng, s.values, changes[s.name] + 1) for s in SLOTS}
        # Statements in time order: every first statement, then the updates, shuffled within each wave.
        waves = [[(s, 0) for s in SLOTS]] + [[(s, i) for s in SLOTS if changes[s.name] >= i] for i in (1, 2)]
        at = START + timedelta(days=c % 7)
        last_key: dict[str, str] = {}
        n = 0
        for wave in waves:
            rng.shuffle(wave)
            for slot, i in wave:
                for _ in range(rng.randint(2, 5)):
                    at += timedelta(hours=rng.randint(2, 20))
                    conv.turns.append(Turn(f"{conv.session}-{n}", "user", rng.choice(DISTRACTORS), at))
                    conv.turns.append(
                        Turn(
                            f"{conv.session}-{n}r",
                            "assistant",
                            rng.choice(REPLIES),
                            at + timedelta(minutes=1),
                        )
                    )
                    n += 1
                at += timedelta(hours=rng.randint(2, 20))
                template = rng.choice(slot.first if i == 0 else slot.update)
                key = f"{conv.session}-{n}"
                conv.turns.append(
                    Turn(
                        key,
                        "user",
                        template.format(v=values[slot.name][i]),
                        at,
                        replaces=last_key.get(slot.name),
                    )
                )
                last_key[slot.name] = key
                n += 1
        for slot in SLOTS:
            chain = values[slot.name]
            conv.questions.append(
                Question(conv.session, slot.name, slot.question, chain[-1], tuple(chain[:-1]))
            )
        out.append(conv)
    return out
