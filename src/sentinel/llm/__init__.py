"""sentinel's own LLM agents (pydantic-ai): the incident narrative and the investigator.
Optional: detection, ranking, gates and verification never need them. See ``agents.py``
(the agents and their checks), ``bounds.py`` (what they may change), ``story.py`` (what
their stored records mean now), ``prompts.py``, ``records.py``, ``tracing.py``.
"""
