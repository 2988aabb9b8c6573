"""The Learning Agent's stages: what sentinel learns from resolved incidents.

Modules: ``scoring`` (``evaluate_archive``: the RCA engine over an archive of cases,
scored as AC@1, AC@3, Avg@5 and ECE per fault kind; ``regressions`` against a baseline
report, what ``sentinel eval`` gates on), ``calibration`` (``fit_calibration``: the
softmax temperature and "none of these" logit by maximum likelihood on archived
outcomes; ``heldout_calibration``: ECE before and after a refit, on held-out cases),
``archive`` (``archive_incident``: a resolved incident written as a case, with the truth
people confirmed, or weak truth from a verified fix; committed when the archive is a git
repository), ``priors`` (playbook success rates and component priors; ``LearnedState``,
the versioned learned state), ``evals_export`` (an incident's failing agent runs as a
pydantic-evals dataset).
Import from the modules: each is loaded only by what needs it.

What must not live here: printing (``sentinel.cli_eval``), the case format's files
(``sentinel.cases``), ranking itself (``sentinel.rca``).
"""
