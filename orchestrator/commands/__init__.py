"""The commands of the ``fastdowntime`` CLI, one ``cmd_*`` function each, grouped by what
they work on. Each takes the parsed arguments, calls the runner, prints, and returns the
exit code; errors propagate to :func:`orchestrator.cli.main`.

- :mod:`.planning`: ``plan``, ``patches`` (offline, no config needed)
- :mod:`.checks`: ``preflight``, ``status``, ``timings`` (read, change nothing)
- :mod:`.deploying`: ``deploy``, ``rehearse``, ``rollback``, ``resume``, ``unlock``
- :mod:`.history`: ``runs``, ``show``, ``report``
- :mod:`.sandbox`: ``sandbox up|down|status``
- :mod:`.completion`: ``completion bash|zsh``

:mod:`.loading` finds the config and the hosts; :mod:`.output` writes stdout and stderr.
"""
