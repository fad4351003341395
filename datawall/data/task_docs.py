"""Training examples from a verifiable task: [bos] prompt solution [eos], loss on solution and eos only."""

from __future__ import annotations

import hashlib

import numpy as np

from datawall.data.budget import Doc
from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError

_FIRST_BLOCK = 256
_MAX_BLOCK = 8192


class SplitExhaustedError(DatawallError):
    """A split has fewer distinct examples (or tokens) than were asked for; `.examples`, `.tokens` say what it has."""

    def __init__(self, message: str, examples: int, tokens: int):
        super().__init__(message)
        self.examples, self.tokens = examples, tokens


def task_docs(task, tokenizer: Tokenizer, split: str, count: int | None = None,
              unique_tokens: int | None = None, start: int = 0) -> list[Doc]:
    """Distinct docs for problems start, start+1, ...: exactly `count` of them, or the fewest whose tokens reach U.

    A worked example identical to an earlier one is skipped (generated splits hold none; a file might), so U
    counts distinct examples.
    """
    if (count is None) == (unique_tokens is None):
        raise DatawallError("task_docs: give exactly one of count and unique_tokens")
    if (count is not None and count <= 0) or (unique_tokens is not None and unique_tokens <= 0) or start < 0:
        raise DatawallError(f"task_docs: count/unique_tokens must be positive and start >= 0, "
                            f"got count={count}, unique_tokens={unique_tokens}, start={start}")
    docs: list[Doc] = []
    seen: set[bytes] = set()
    total, index = 0, start
    while True:
        if count is not None:
            n = min(count - len(docs), _MAX_BLOCK)
        elif docs:  # size the next block from the tokens per example seen so far
            n = min(_MAX_BLOCK, max(_FIRST_BLOCK, int(1.05 * (unique_tokens - total) * len(docs) / total) + 1))
        else:
            n = _FIRST_BLOCK
        block, end = _examples(task, tokenizer, split, index, n)
        for doc in block:
            digest = hashlib.blake2b(doc.ids.tobytes(), digest_size=8).digest()
            if digest in seen:
                continue
            seen.add(digest)
            docs.append(doc)
            total += len(doc)
            if unique_tokens is not None and total >= unique_tokens:
                return docs
        if count is not None and len(docs) >= count:
            return docs
        if end is not None:
            wanted = f"{count:,} examples" if count is not None else f"{unique_tokens:,} unique tokens"
            raise SplitExhaustedError(f"{end}; {wanted} were asked for (the split gives {len(docs):,} distinct "
                                      f"examples, {total:,} tokens, from problem {start:,} on)", len(docs), total)
        index += n


def _examples(task, tokenizer: Tokenizer, split: str, start: int, n: int) -> tuple[list[Doc], str | None]:
    """Encode problems [start, start+n) in two batched calls; (docs, why the split ended) if it ends sooner."""
    problems, end = [], None
    for i in range(start, start + n):
        try:
            problems.append(task.problem(split, i))
        except IndexError as e:  # TaskIndexError names the split's real size
            end = str(e) or f"the {split} split ends at problem {i:,}"
            break
    if not problems:
        return [], end
    return example_docs(tokenizer, [p.prompt for p in problems], [task.solution(p) for p in problems]), end


def example_docs(tokenizer: Tokenizer, prompts: list[str], solutions: list[str]) -> list[Doc]:
    """[bos] prompt solution [eos] per pair, loss on the solution and eos only (real and synthetic examples alike)."""
    docs = []
    for prompt, solution in zip(tokenizer.encode_batch(prompts), tokenizer.encode_batch(solutions), strict=True):
        head = tokenizer.with_bos(prompt)  # bos first when the tokenizer adds one, as the model is prompted
        ids = np.array([*head, *solution, tokenizer.eos_id], dtype=np.int32)
        mask = np.ones(len(ids), dtype=bool)
        mask[: len(head)] = False
        docs.append(Doc(ids, mask))
    return docs
