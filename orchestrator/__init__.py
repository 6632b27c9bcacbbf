"""fastdowntime: deploy services whose PostgreSQL schema changes often.

Follows Launchpad's fastdowntime process: database patches land on their own
on ``db-stable``, the cold ones are applied inside a short timed window while
the already-running new code takes over, and code-only revisions roll out
host by host without downtime.
"""

__version__ = "0.1.0"
