"""Remediation playbooks: the YAML schema (``model``) and reading files (``loader``).

What must not live here: deciding or doing anything (``sentinel.remediation``,
``sentinel.adapters.executors``).
"""
