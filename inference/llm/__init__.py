"""Generative language models (GGUF) behind the OpenAI-compatible `/v1/` API.

- `host.py`: the confined process that holds one GGUF model in llama.cpp's server engine (`xllamacpp`):
  continuous batching over a few slots, prompt caching, the chat template from the file. It has no network
  and opens no socket of its own: it answers on a listening Unix socket the trusted side made and handed it.
- `hosts.py`: the trusted side: starts a host per model on first use (one per machine, shared by every web
  process), finds it again, and lets it go when it has been idle (`keep_alive`).
- `protocol.py`: the few JSON lines the two sides exchange, read with bounded sizes.
- `generation.py`: one call, from admission (tokens reserved) to its ledger record (tokens settled).

Nothing here but `hosts.py` and `generation.py` imports Django: the host runs in the sandbox.
"""
