"""Agents that use tools: the model -> tools -> model loop, on the critical path.

- ``tool``: ``Tool`` / ``@tool``, a plain async function with typed, validated
  arguments (``side_effects=True``: never started speculatively).
- ``loop``: ``Agent``, the loop; each tool starts the moment its call's arguments are
  complete, several run at once, results go back in order; turns and tool calls are
  sub-steps of the running step (report, timeline, trace); the deadline stops it with
  its best partial answer.
"""

from critpath.agents.loop import Agent, AgentResult, AgentStatus, StopReason, ToolRun, ToolStart
from critpath.agents.tool import Tool, tool

__all__ = [
    "Agent",
    "AgentResult",
    "AgentStatus",
    "StopReason",
    "Tool",
    "ToolRun",
    "ToolStart",
    "tool",
]
