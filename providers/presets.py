"""Presets: the systems this product is known to work with, as data an admin picks from.

A preset fills the provider form (name, base URL, timeouts, whether to ask for usage in the
stream) and, when the provider is saved, creates its default models with their capability
flags. Models fetched later from the provider's /models list take the preset's ``fetched``
template. Everything here is a starting point the admin can change; the streaming client
handles each system's wire quirks whatever is set here (see providers/chunks.py).

Context windows and output limits are the providers' published figures where they publish
them, and conservative guesses otherwise (marked); prices are left empty unless they are
list prices, because a wrong price is worse than none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .params import ACCEPTABLE_PARAMS, STANDARD_PARAMS

__all__ = ["PRESETS", "ModelPreset", "ProviderPreset", "get_preset"]


@dataclass(frozen=True)
class ModelPreset:
    name: str = ""
    display_name: str = ""
    context_window: int = 8192
    max_output_tokens: int = 1024
    streams_reasoning: bool = False
    accepts_tools: bool = False
    accepts_json_mode: bool = False
    accepted_params: tuple[str, ...] = STANDARD_PARAMS
    max_tokens_param: str = "max_tokens"
    input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None

    def model_fields(self) -> dict[str, object]:
        """The ChatModel fields this preset sets (all but provider, name and enabled)."""
        return {
            "display_name": self.display_name,
            "context_window": self.context_window,
            "max_output_tokens": self.max_output_tokens,
            "streams_reasoning": self.streams_reasoning,
            "accepts_tools": self.accepts_tools,
            "accepts_json_mode": self.accepts_json_mode,
            "accepted_params": list(self.accepted_params),
            "max_tokens_param": self.max_tokens_param,
            "input_price_per_mtok": self.input_price_per_mtok,
            "output_price_per_mtok": self.output_price_per_mtok,
        }


@dataclass(frozen=True)
class ProviderPreset:
    key: str
    name: str  # the provider name the form starts with
    base_url: str  # "" when every customer has their own address
    summary: str  # what this system adds, in a line
    notes: str  # what the admin should know when setting it up
    models: tuple[ModelPreset, ...] = ()
    # Capabilities given to models fetched from /models (their names come from the list).
    fetched: ModelPreset = field(default_factory=ModelPreset)
    needs_api_key: bool = True
    include_usage: bool = True
    connect_timeout: float = 10.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0

    def provider_fields(self) -> dict[str, object]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "include_usage": self.include_usage,
            "connect_timeout": self.connect_timeout,
            "first_byte_timeout": self.first_byte_timeout,
            "idle_timeout": self.idle_timeout,
            "total_timeout": self.total_timeout,
        }


_PRESET_LIST: tuple[ProviderPreset, ...] = (
    ProviderPreset(
        key="asi-cloud",
        name="ASI Cloud",
        base_url="https://inference.asicloud.cudos.org/v1",
        summary="Plain chat with streaming and system prompts.",
        notes="Create an API key in the ASI Cloud console and paste it below.",
        models=(
            ModelPreset(
                name="google/gemma-3-27b-it",
                display_name="Gemma 3 27B",
                context_window=131_072,
                max_output_tokens=8192,
                accepted_params=("temperature", "top_p"),
            ),
        ),
        fetched=ModelPreset(accepted_params=("temperature", "top_p")),
    ),
    ProviderPreset(
        key="gateway",
        name="OpenAI-compatible gateway",
        base_url="http://localhost/api/v1",
        summary="A self-hosted LiteLLM-style gateway: top_k, penalties and stop sequences; "
        "per-key budgets.",
        notes="Use your gateway's address and a virtual key. When a key's budget is used up "
        "the gateway answers 429 with a budget message: replies then show it and are not "
        "retried.",
        models=(
            ModelPreset(
                name="gpt-3.5-turbo",
                display_name="GPT-3.5 Turbo (gateway)",
                context_window=16_385,
                max_output_tokens=4096,
                accepted_params=(
                    "temperature",
                    "top_p",
                    "top_k",
                    "frequency_penalty",
                    "presence_penalty",
                    "stop",
                ),
            ),
        ),
        fetched=ModelPreset(
            accepted_params=(
                "temperature",
                "top_p",
                "top_k",
                "frequency_penalty",
                "presence_penalty",
                "stop",
            )
        ),
    ),
    ProviderPreset(
        key="asi1-mini",
        name="ASI-1 Mini",
        base_url="https://api.asi1.ai/v1",
        summary="Streams the model's reasoning in a top-level thought field; stop_reason "
        "beside finish_reason.",
        notes="The model's thoughts are shown in a collapsed Reasoning section above each "
        "reply. Its context window is limited; the figure below is a conservative guess.",
        models=(
            ModelPreset(
                name="asi1-mini",
                display_name="ASI-1 Mini",
                context_window=32_768,  # not published; conservative
                max_output_tokens=4096,
                streams_reasoning=True,
                accepted_params=("temperature",),
            ),
        ),
        fetched=ModelPreset(streams_reasoning=True, accepted_params=("temperature",)),
    ),
    ProviderPreset(
        key="siati",
        name="SIATI",
        base_url="",
        summary="Swiss-hosted: tools, JSON mode (response_format) and seed; finish reasons "
        "stop, length, tool_calls and content_filter.",
        notes="Enter the base URL of your SIATI deployment (it ends in /v1). Tool calls the "
        "model asks for are shown to the user; this product does not run tools.",
        models=(
            ModelPreset(
                name="siati/mistral-small-24b",
                display_name="Mistral Small 24B (SIATI)",
                context_window=32_768,
                max_output_tokens=4096,
                accepts_tools=True,
                accepts_json_mode=True,
                accepted_params=STANDARD_PARAMS,
            ),
        ),
        fetched=ModelPreset(accepts_tools=True, accepts_json_mode=True),
    ),
    ProviderPreset(
        key="t-cloud",
        name="T-Cloud AI Foundation Services",
        base_url="https://llm-server.llmhub.t-systems.net/v2",
        summary="Stream chunks with empty choices, usage in the stream.",
        notes="Paste the API key of your T-Cloud AI Foundation Services subscription.",
        models=(
            ModelPreset(
                name="Llama-3.3-70B-Instruct",
                display_name="Llama 3.3 70B",
                context_window=131_072,
                max_output_tokens=8192,
                accepted_params=("temperature", "top_p"),
            ),
        ),
        fetched=ModelPreset(accepted_params=("temperature", "top_p")),
    ),
    ProviderPreset(
        key="local",
        name="Local server (llama.cpp, Ollama, vLLM)",
        base_url="http://127.0.0.1:8080/v1",
        summary="Your own server: reasoning as reasoning_content or <think> tags; models "
        "come from its /models list.",
        notes="Change the port to your server's: llama.cpp listens on 8080, Ollama on 11434, "
        "vLLM on 8000. No API key is needed unless you set one. After saving, use Fetch "
        "models. Loading a model can take a while, hence the long first-byte timeout.",
        fetched=ModelPreset(
            streams_reasoning=True,
            accepts_json_mode=True,
            accepted_params=ACCEPTABLE_PARAMS,
        ),
        needs_api_key=False,
        connect_timeout=5.0,
        first_byte_timeout=180.0,
    ),
    ProviderPreset(
        key="openai",
        name="OpenAI",
        base_url="https://api.openai.com/v1",
        summary="The reference API; usage in the stream through stream_options.include_usage.",
        notes="Create a key at platform.openai.com. Fetch models lists every model of the "
        "account, including ones that cannot chat: enable only the chat models. Reasoning "
        "models (o-series) take max_completion_tokens instead of max_tokens and accept no "
        "temperature.",
        models=(
            ModelPreset(
                name="gpt-4.1-mini",
                display_name="GPT-4.1 mini",
                context_window=1_047_576,
                max_output_tokens=32_768,
                accepts_tools=True,
                accepts_json_mode=True,
                input_price_per_mtok=Decimal("0.40"),
                output_price_per_mtok=Decimal("1.60"),
            ),
            ModelPreset(
                name="gpt-4o-mini",
                display_name="GPT-4o mini",
                context_window=128_000,
                max_output_tokens=16_384,
                accepts_tools=True,
                accepts_json_mode=True,
                input_price_per_mtok=Decimal("0.15"),
                output_price_per_mtok=Decimal("0.60"),
            ),
        ),
        fetched=ModelPreset(accepts_tools=True, accepts_json_mode=True),
    ),
)

PRESETS: dict[str, ProviderPreset] = {preset.key: preset for preset in _PRESET_LIST}


def get_preset(key: str | None) -> ProviderPreset | None:
    return PRESETS.get(key or "")
