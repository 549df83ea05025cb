"""Persistence: database tables and sessions (:mod:`.db`, :mod:`.tables`), Alembic migrations
(:mod:`.migrate`), and the blob folder for file bytes (:mod:`.blobs`).

Everything specific to one database engine lives here and nowhere else."""
