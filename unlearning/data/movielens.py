"""MovieLens-100K from the files inside the `recbole` wheel, and TALLRec-style samples.

The data is read at run time from the installed package (plain TSV with a typed header
row; recbole itself is never imported). MovieLens may not be redistributed: nothing read
here is ever written into the repository. Cite: F. M. Harper and J. A. Konstan, "The
MovieLens Datasets: History and Context", ACM TiiS 5(4):19, 2015.

Samples (one per target rating): per user, ratings in time order; the history is the
previous `history` ratings, split into liked (rating > 3) and disliked; the answer is "Yes"
if the user rated the target > 3, else "No"; the subject is the user id.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import BadInput
from unlearning.data.records import Record

LIKED_ABOVE = 3

INSTRUCTION = (
    "Given the movies a user liked and disliked, decide whether the user will like the target movie. "
    "Answer Yes or No."
)
_LIKED = "Liked: "
_DISLIKED = "Disliked: "


@dataclass(frozen=True)
class Rating:
    user_id: str
    item_id: str
    rating: int
    timestamp: int


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.title} ({self.year})" if self.year else self.title


@dataclass(frozen=True)
class User:
    user_id: str
    age: int
    gender: str
    occupation: str
    zip_code: str


@dataclass(frozen=True)
class MovieLens:
    ratings: list[Rating]
    items: dict[str, Item]
    users: dict[str, User]


def packaged_dir() -> Path:
    """`recbole/dataset_example/ml-100k` of the installed recbole wheel (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("MovieLens-100K needs the recbole package: pip install --no-deps recbole==1.2.1")
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"


def _read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a recbole atomic file: tab-separated, header `name:type`, keyed by name."""
    try:
        with path.open(encoding="utf-8") as f:
            header = [column.split(":")[0] for column in f.readline().rstrip("\n").split("\t")]
            return [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in f if line.strip()]
    except (OSError, ValueError) as err:
        raise BadInput(f"cannot read {path}: {err}") from err


def load(directory: Path | None = None) -> MovieLens:
    root = directory or packaged_dir()
    ratings = [
        Rating(r["user_id"], r["item_id"], int(float(r["rating"])), int(float(r["timestamp"])))
        for r in _read_table(root / "ml-100k.inter")
    ]
    items = {
        r["item_id"]: Item(r["item_id"], r["movie_title"], r["release_year"], tuple(r["class"].split()))
        for r in _read_table(root / "ml-100k.item")
    }
    users = {
        r["user_id"]: User(r["user_id"], int(r["age"]), r["gender"], r["occupation"], r["zip_code"])
        for r in _read_table(root / "ml-100k.user")
    }
    return MovieLens(ratings, items, users)


def _quoted(items: list[Item]) -> str:
    # Titles are quoted; a double quote inside a title becomes a single one so the lists stay parseable.
    return ", ".join('"' + item.label.replace('"', "'") + '"' for item in items) or "none"


def prompt(liked: list[Item], disliked: list[Item], target: Item) -> str:
    return (
        f"{INSTRUCTION}\n"
        f"{_LIKED}{_quoted(liked)}\n"
        f"{_DISLIKED}{_quoted(disliked)}\n"
        f'Target movie: "{target.label.replace(chr(34), chr(39))}"\n'
        "Will the user like the target movie?"
    )


def build_samples(data: MovieLens, history: int = 10, per_user: int | None = None,
                  max_users: int | None = None) -> list[Record]:
    """TALLRec-style records: per user (ascending numeric id), time-ordered targets.

    Only targets with a full history of `history` earlier ratings are used; `per_user`
    keeps each user's most recent targets; `max_users` keeps the first users.
    Record ids are `ml100k/USER/ITEM` (a user rates an item once).
    """
    by_user: dict[str, list[Rating]] = defaultdict(list)
    for rating in data.ratings:
        by_user[rating.user_id].append(rating)
    users = sorted(by_user, key=int)[:max_users]
    records = []
    for user in users:
        ratings = sorted(by_user[user], key=lambda r: (r.timestamp, int(r.item_id)))
        targets = range(history, len(ratings))
        if per_user is not None:
            targets = targets[max(0, len(targets) - per_user):]
        for i in targets:
            past = ratings[i - history:i]
            liked = [data.items[r.item_id] for r in past if r.rating > LIKED_ABOVE]
            disliked = [data.items[r.item_id] for r in past if r.rating <= LIKED_ABOVE]
            target = ratings[i]
            records.append(Record(
                record_id=f"ml100k/{user}/{target.item_id}",
                subject_id=user,
                prompt=prompt(liked, disliked, data.items[target.item_id]),
                answer="Yes" if target.rating > LIKED_ABOVE else "No",
            ))
    return records


def history_positivity(text: str) -> float | None:
    """Share of liked movies in a sample's history (the trivial baseline score), None if not ours."""
    counts = {}
    for line in text.splitlines():
        for key in (_LIKED, _DISLIKED):
            if line.startswith(key):
                counts[key] = 0 if line == key + "none" else line.count('"') // 2
    if len(counts) != 2 or counts[_LIKED] + counts[_DISLIKED] == 0:
        return None
    return counts[_LIKED] / (counts[_LIKED] + counts[_DISLIKED])
