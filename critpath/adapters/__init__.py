"""The model protocol and its implementations (to come): OpenAI-compatible HTTP
(vLLM, SGLang, llama.cpp, OpenAI), the in-process vLLM engine and simulated models,
plus wrappers that compose like middleware: pool, hedge, retry, cache.
"""

__all__: list[str] = []
