"""The host's view of requests and slots, as FastDeploy's engine side keeps it.

It knows which request sits in which slot, what each step will run (so a decode-only batch's
token count can be predicted instead of read back from the GPU), which slots produce a token at
a step (so saved tokens can be attributed), and each request's tokens so far (a request resumed
after preemption re-prefills its prompt plus them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from fdoverlap_cli.trace import Request, Step, Trace

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def derived_prompt(seed: int, index: int, length: int, vocab_size: int, avoid: int) -> np.ndarray:
    """Deterministic prompt token ids for request number `index` (splitmix64 of seed, index, position).

    Ids are in [0, vocab_size) and never `avoid` (the end token), so prompts look like text.
    """
    x = (np.arange(length, dtype=np.uint64) + np.uint64((seed * 0x10001 + index * _GOLDEN) & _MASK)) * np.uint64(
        _GOLDEN
    )
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    ids = (x % np.uint64(max(vocab_size - 1, 1))).astype(np.int64)
    if 0 <= avoid < vocab_size:
        ids[ids >= avoid] += 1
    return ids


def digest(tokens: list[int]) -> str:
    """sha256 of the tokens as little-endian int64: equal streams, equal digests."""
    return hashlib.sha256(np.asarray(tokens, dtype="<i8").tobytes()).hexdigest()


@dataclass
class _Slot:
    request: int = -1  # index into trace.requests, -1 when free
    prefill_len: int = 0  # prompt (+ tokens generated before a preemption)
    prefilled: int = 0  # prefill tokens launched so far
    chunk: int = 0  # tokens of the chunk inserted for the coming step (0: none)
    left: int = 0  # tokens still to generate


@dataclass
class StepPlan:
    """What one step runs, as the host predicts it when launching the step."""

    step: int
    token_num: int  # tokens in the packed batch
    running: int  # slots that run
    prefill_tokens: int
    producers: list[tuple[int, int]] = field(default_factory=list)  # (slot, request index) that emit a token
    decode_only: bool = True  # no chunk inserted at this step


class Bookkeeping:
    """Request and slot state on the host, updated at insert and at launch time."""

    def __init__(self, trace: Trace, vocab_size: int) -> None:
        self.trace = trace
        self.requests: tuple[Request, ...] = trace.requests
        self.index = trace.request_index
        self.vocab_size = vocab_size
        self.slots = [_Slot() for _ in range(trace.config.max_num_seqs)]
        # Tokens saved per request while it is in flight (a resume re-prefills them); once it has all its
        # tokens only their digest is kept, so memory follows the requests in flight, not the run's length.
        self.generated: list[list[int]] = [[] for _ in trace.requests]
        self.finished: dict[int, str] = {}  # request index -> digest of its tokens
        self._prompts: dict[int, np.ndarray] = {}
        self._prefill: dict[int, np.ndarray] = {}  # request -> the prefill its current occupancy replays

    def reset(self) -> None:
        self.slots = [_Slot() for _ in self.slots]
        self.generated = [[] for _ in self.requests]
        self.finished.clear()
        self._prefill.clear()

    def prompt(self, r: int) -> np.ndarray:
        if r not in self._prompts:
            req, cfg = self.requests[r], self.trace.config
            if req.prompt_token_ids is not None:
                ids = np.asarray(req.prompt_token_ids, dtype=np.int64) % self.vocab_size
            else:
                ids = derived_prompt(cfg.seed, r, req.prompt_len, self.vocab_size, cfg.eos_token_id)
            self._prompts[r] = ids
        return self._prompts[r]

    def apply_step(self, step: Step) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Record a step's preemptions and inserts; return insert_tasks' (task_meta, task_tokens, preempted slots).

        task_meta rows: (slot, start, len, prefill_len, step_idx, max_dec_len).
        """
        for s in step.preempt:
            self.slots[s] = _Slot()
        meta = np.zeros((len(step.insert), 6), dtype=np.int64)
        chunks = []
        for i, ins in enumerate(step.insert):
            r = self.index[ins.request]
            done = self.generated[r]
            slot = self.slots[ins.slot]
            if ins.start == 0:
                prefill = np.concatenate([self.prompt(r), np.asarray(done, dtype=np.int64)])
                self.slots[ins.slot] = slot = _Slot(
                    request=r, prefill_len=len(prefill), left=self.requests[r].output_len - len(done)
                )
                self._prefill[r] = prefill
            slot.chunk = ins.length
            chunks.append(self._prefill[r][ins.start : ins.start + ins.length])
            meta[i] = (ins.slot, ins.start, ins.length, slot.prefill_len, len(done), self.requests[r].output_len)
        tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return meta, tokens, list(step.preempt)

    def launch(self, k: int) -> StepPlan:
        """The plan of step k (call once, when the step is launched) and the state after it."""
        plan = StepPlan(step=k, token_num=0, running=0, prefill_tokens=0)
        for s, slot in enumerate(self.slots):
            if slot.request < 0:
                continue
            if slot.chunk:
                plan.decode_only = False
                plan.prefill_tokens += slot.chunk
                plan.token_num += slot.chunk
                slot.prefilled += slot.chunk
                slot.chunk = 0
                produces = slot.prefilled == slot.prefill_len
            elif slot.prefilled == slot.prefill_len:
                plan.token_num += 1
                produces = True
            else:  # between two chunks of a prefill: the slot waits
                continue
            plan.running += 1
            if produces:
                plan.producers.append((s, slot.request))
                slot.left -= 1
                if slot.left == 0:
                    self.slots[s] = _Slot()
        return plan

    def record_tokens(self, producers: list[tuple[int, int]], tokens: np.ndarray) -> None:
        """Attribute a saved step's tokens (one per slot) to the requests that produced them."""
        for s, r in producers:
            done = self.generated[r]
            done.append(int(tokens[s]))
            if len(done) == self.requests[r].output_len:
                self.finished[r] = digest(done)
                self.generated[r] = []
                self._prompts.pop(r, None)
                self._prefill.pop(r, None)


def planned_launches(trace: Trace, vocab_size: int) -> list[StepPlan]:
    """Every step's plan as a replay launches it, from the trace alone: a dry run of the bookkeeping (token
    values do not change a count, so every saved token is taken as 0)."""
    book = Bookkeeping(trace, vocab_size)
    tokens = np.zeros(trace.config.max_num_seqs, dtype=np.int64)
    plans = []
    for k, step in enumerate(trace.steps):
        book.apply_step(step)
        plans.append(book.launch(k))
        book.record_tokens(plans[-1].producers, tokens)
    return plans
