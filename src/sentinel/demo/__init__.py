"""``sentinel demo``: a live simulated fleet of pydantic-ai agents, a fault injected into
it, and a real daemon detecting, diagnosing, ticketing, fixing, verifying and archiving
it on embedded defaults.

Modules: ``scenarios`` (the faults and their truth), ``fleet`` (the fleet's own process:
agents, tool services, the config repository it follows), ``timing`` (how its spans get
clock timestamps), ``stages`` (the ten stages from the store, pure), ``processes`` (the
fleet's and Prometheus' processes, the daemon's logging), ``display`` (the live table
and the summary), ``run`` (setting up and running). Nothing is imported here:
``python -m sentinel.demo.fleet`` must not import the daemon.
"""
