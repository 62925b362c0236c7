"""Freya backend: the chat-history service of the Freya assistant."""
