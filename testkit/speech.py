"""Helpers for the offline speech tests: word error counting."""

from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """Lower-case words; hyphens split ("lip-sync" is "lip sync")."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(ref: str, hyp: str) -> int:
    """Levenshtein distance between the word sequences (substitutions + insertions + deletions)."""
    a, b = words(ref), words(hyp)
    row = list(range(len(b) + 1))
    for i, wa in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, wb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (wa != wb))
    return row[-1]
