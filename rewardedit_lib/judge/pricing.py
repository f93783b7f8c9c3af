"""What a judge run costs: list prices, estimates before a run, and the tokens actually billed.

Separate from :mod:`.client` because nothing here talks to a server: a notebook can estimate the cost of a
RewardEdit20K annotation (:func:`estimate_cost`) before it has a key, and the numbers are checked by tests
without a network. An unknown model's cost is reported as unknown (``None``), never as 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import prompts

if TYPE_CHECKING:
    from .request import JudgeRequest

#: When :data:`PRICES` was last checked against the providers' price pages. Pass ``prices=`` to override.
PRICES_AS_OF = "2025-06"


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens, and the tokens one low-detail image is billed as (for estimates only)."""

    input_per_mtok: float
    output_per_mtok: float
    image_tokens_low: int = 85

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6


#: Standard (non-batch) prices. gpt-4o-mini bills a low-detail image as 2833 tokens at its lower rate,
#: so it is not 16x cheaper than gpt-4o for image judgements. Dated snapshots (``gpt-4o-2024-08-06``) use
#: their base model's price. Azure deployments have their own names: pass ``price_model=``.
PRICES: dict[str, ModelPrice] = {
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, image_tokens_low=2833),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "toy-judge": ModelPrice(0.0, 0.0, image_tokens_low=85),
}
#: Output tokens of one answer (a score and one sentence), for estimates.
OUTPUT_TOKENS_ESTIMATE = 40
#: Tokens per image when the model's price entry is unknown (OpenAI's fixed low-detail cost).
DEFAULT_IMAGE_TOKENS = 85


def price_for(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price entry of ``model`` (or of its base name without a ``-YYYY-MM-DD`` suffix); None if unknown."""
    table = PRICES if prices is None else prices
    if model in table:
        return table[model]
    return table.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))


def estimate_request_tokens(perspective: str, mode: str, instruction: str,
                            price: ModelPrice | None = None) -> tuple[int, int]:
    """(input, output) tokens of one request: prompt text / 4 + two low-detail images, ~40 output tokens."""
    text = prompts.system_prompt(perspective, mode) + prompts.user_text(instruction)  # type: ignore[arg-type]
    image = price.image_tokens_low if price is not None else DEFAULT_IMAGE_TOKENS
    return len(text) // 4 + 2 * image, OUTPUT_TOKENS_ESTIMATE


@dataclass
class CostEstimate:
    """What a run will cost before it starts (requests to send x estimated tokens)."""

    model: str
    requests: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None  # None: the model has no price entry

    def scaled(self, requests: int) -> "CostEstimate":
        """The same per-request estimate for ``requests`` requests (e.g. from a sample to all of RewardEdit20K)."""
        f = requests / self.requests if self.requests else 0.0
        cost = None if self.cost_usd is None else self.cost_usd * f
        return CostEstimate(self.model, requests, 0, round(self.input_tokens * f), round(self.output_tokens * f), cost)

    def __str__(self) -> str:
        head = (f"estimate: {self.requests} request(s) to send to {self.model!r} ({self.cached} answered from cache), "
                f"~{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens")
        if self.cost_usd is None:
            return head + f"; cost UNKNOWN: no price for model {self.model!r} in the price table (pass price_model=)"
        return head + f", ~${self.cost_usd:,.4f} at {PRICES_AS_OF} list prices"


def estimate_cost(requests: Iterable["JudgeRequest"], model: str, *, cached: int = 0,
                  prices: Mapping[str, ModelPrice] | None = None, price_model: str | None = None) -> CostEstimate:
    """Estimate the tokens and cost of sending ``requests`` to ``model`` (cache hits excluded by the caller)."""
    price = price_for(price_model or model, prices)
    n = tin = tout = 0
    for r in requests:
        i, o = estimate_request_tokens(r.perspective, r.mode, r.instruction, price)
        n, tin, tout = n + 1, tin + i, tout + o
    cost = price.cost(tin, tout) if price is not None else None
    return CostEstimate(model, n, cached, tin, tout, cost)


@dataclass
class Usage:
    """Tokens actually billed, summed from the responses' ``usage`` (invalid answers are billed too)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    responses: int = 0
    without_usage: int = 0  # responses that carried no usage (their tokens are unknown)

    def add(self, usage: Any) -> None:
        self.responses += 1
        get = usage.get if isinstance(usage, dict) else (lambda k: getattr(usage, k, None))
        pt, ct = (get("prompt_tokens"), get("completion_tokens")) if usage is not None else (None, None)
        if not isinstance(pt, int) or not isinstance(ct, int):
            self.without_usage += 1
            return
        self.prompt_tokens += pt
        self.completion_tokens += ct

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
