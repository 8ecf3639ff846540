"""`/v1/`: the OpenAI-compatible API (`openai_api.py`)."""

from django.urls import path, re_path

from . import openai_api

urlpatterns = [
    path("models", openai_api.models_list, name="openai-models"),
    path("chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
    path("completions", openai_api.completions, name="openai-completions"),
    path("embeddings", openai_api.embeddings, name="openai-embeddings"),
    re_path(r"^(?P<path>.*)$", openai_api.not_found),
]
