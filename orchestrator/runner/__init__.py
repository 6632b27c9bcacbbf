"""The runner: playbooks, the generic step runner, the run's journal, the probe, run history."""
