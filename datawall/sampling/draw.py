"""Draw n completions per prompt through the sample cache first, then the backend (one call per gap shape).

Shared by the search strategies (beam search, thinking budgets) that issue many small sampling calls: a
re-run, or a larger sweep after a smaller one, pays only for completions it has not drawn before.
"""

from __future__ import annotations

from datawall.sampling.backends import Backend, Completion, Prompt, mix_seed
from datawall.sampling.sample_cache import SampleCache, params_key


class CachedDraw:
    """`draw(prompts, n, **params)` -> n completions per prompt; counts what the backend really drew."""

    def __init__(self, backend: Backend, cache: SampleCache | None, seed: int):
        self.backend, self.cache, self.seed = backend, cache, seed
        self.drawn = 0

    def draw(self, prompts: list[Prompt], n: int, max_tokens: int, temperature: float, top_p: float | None,
             stop: list[str] | None) -> list[list[Completion]]:
        """Completions 0..n-1 of every prompt, cached ones reused (sample j is the same whatever n is)."""
        params = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "stop": stop}
        pkey = params_key(**params)
        keys = [SampleCache.key(self.backend.identity, p, pkey) for p in prompts]
        got: list[dict[int, Completion]] = []
        need: dict[tuple[int, ...], list[int]] = {}
        for i, key in enumerate(keys):
            cached = self.cache.get(key, list(range(n))) if self.cache else {}
            got.append(cached)
            rest = tuple(j for j in range(n) if j not in cached)
            if rest:
                need.setdefault(rest, []).append(i)
        for idx, which in need.items():
            # a partial request (a larger n after a smaller one) gets its own seed stream, as in think's pool
            seed = self.seed if idx[0] == 0 else mix_seed(self.seed, idx[0])
            outs = self.backend.sample([prompts[i] for i in which], n=len(idx), seed=seed, **params)
            for i, comps in zip(which, outs, strict=True):
                got[i].update(zip(idx, comps, strict=True))
            if self.cache:
                self.cache.put([(keys[i], j, c) for i, comps in zip(which, outs, strict=True)
                                for j, c in zip(idx, comps, strict=True)])
            self.drawn += len(idx) * len(which)
        return [[g[j] for j in range(n)] for g in got]
