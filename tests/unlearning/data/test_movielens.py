"""MovieLens-100K reader (recbole's layout) and the TALLRec-style sample builder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from unlearning.data import movielens as ml


def write_layout(directory: Path, users: int = 3, ratings_per_user: int = 14, seed: int = 0) -> None:
    """Made-up rows in ML-100K's recbole layout (typed header, tab-separated)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\tFilm {i}, The\t{1950 + i}\tDrama Comedy" for i in range(1, 41)]
    items.append('41\tSay "Hi"\t\tunknown')
    (directory / "ml-100k.item").write_text("\n".join(items) + "\n", encoding="utf-8")
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(1, users + 1):
        for i in rng.sample(range(1, 42), ratings_per_user):
            inter.append(f"{u}\t{i}\t{rng.randint(1, 5)}\t{rng.randint(10**8, 10**9)}")
    rng.shuffle(inter[1:])
    (directory / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    users_rows = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users_rows += [f"{u}\t{20 + u}\tF\twriter\t0000{u}" for u in range(1, users + 1)]
    (directory / "ml-100k.user").write_text("\n".join(users_rows) + "\n", encoding="utf-8")


def test_reader_and_sample_invariants(tmp_path):
    write_layout(tmp_path / "ml")
    data = ml.load(tmp_path / "ml")
    assert (len(data.ratings), len(data.items), len(data.users)) == (42, 41, 3)
    assert data.items["41"].label == "Say \"Hi\"" and data.items["1"].label == "Film 1, The (1951)"
    assert data.items["1"].genres == ("Drama", "Comedy")

    samples = ml.build_samples(data)
    assert len(samples) == 3 * (14 - 10)  # every target with a full history of 10
    by_user = {u: sorted((r for r in data.ratings if r.user_id == u), key=lambda r: (r.timestamp, int(r.item_id)))
               for u in data.users}
    for record in samples:
        user, item = record.record_id.split("/")[1:]
        assert record.subject_id == user
        ratings = by_user[user]
        position = [r.item_id for r in ratings].index(item)
        history = ratings[position - 10:position]
        assert position >= 10
        assert record.answer == ("Yes" if ratings[position].rating > 3 else "No")
        liked = sum(r.rating > 3 for r in history)
        assert ml.history_positivity(record.prompt) == liked / 10
        for r in history:  # each history title sits on the line matching its rating
            line = "Liked: " if r.rating > 3 else "Disliked: "
            label = data.items[r.item_id].label.replace('"', "'")
            assert any(ln.startswith(line) and f'"{label}"' in ln for ln in record.prompt.splitlines())
        assert record.prompt.splitlines()[-2] == f'Target movie: "{data.items[item].label.replace(chr(34), chr(39))}"'

    recent = ml.build_samples(data, per_user=2, max_users=2)
    assert [r.subject_id for r in recent] == ["1", "1", "2", "2"]
    assert set(recent) <= set(samples)
    assert {r.record_id for r in recent} == {r.record_id for u in ("1", "2")
                                            for r in [s for s in samples if s.subject_id == u][-2:]}


def test_history_positivity_rejects_foreign_prompts():
    assert ml.history_positivity("What is the capital of France?") is None
    assert ml.history_positivity('Liked: none\nDisliked: "A (1990)"\n') == 0.0


@pytest.mark.assets
def test_packaged_movielens_counts():
    data = ml.load()
    assert len(data.ratings) == 100_000
    assert len(data.users) == 943 and len({r.user_id for r in data.ratings}) == 943
    assert len(data.items) == 1682
    assert data.items["1"].label == "Toy Story (1995)"
    samples = ml.build_samples(data, per_user=3)
    assert len(samples) == 3 * 943 and len({r.record_id for r in samples}) == len(samples)
    assert {r.answer for r in samples} == {"Yes", "No"}
