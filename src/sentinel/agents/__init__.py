"""The four agents: thin orchestrators over the stages and the ports."""
