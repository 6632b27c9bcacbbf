"""``python -m orchestrator`` is the ``fastdowntime`` console script."""

from orchestrator.cli import main

raise SystemExit(main())
