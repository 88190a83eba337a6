"""An example chat service built on critpath (see ``app``); run: ``python -m examples.chatbot``."""

from examples.chatbot.app import ChatConfig, create_app

__all__ = ["ChatConfig", "create_app"]
