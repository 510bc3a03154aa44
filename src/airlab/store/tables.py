"""Tables. Plain SQLAlchemy Core so any SQLAlchemy URL works (SQLite default, PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

experiments = Table(
    "experiments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(20), nullable=False, default="experiment"),  # experiment | train
    Column("area", String(50), nullable=False, default="general"),
    Column("workload", String(50), nullable=False),
    Column("hypothesis", Text, nullable=False, default=""),
    Column("spec", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id", ondelete="CASCADE"),
           nullable=False),
    Column("arm", String(100), nullable=False),
    Column("seed", BigInteger, nullable=False),  # seeds go up to 2**63 - 1
    Column("run_key", String(32), nullable=False),
    Column("state", String(20), nullable=False, default="pending"),
    Column("config", JSON, nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("owner", String(200)),  # who claimed it last (host:pid of an airlab process)
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("wall_seconds", Float),
    Column("info", JSON),  # provenance, dataset facts
    # Added with claims and leases (a migration adds them to older databases, so nullable):
    # a claim is held while lease_until is in the future; the owner's heartbeat extends it.
    Column("lease_until", Float),
    Column("heartbeat_at", Float),
    Column("infra", Boolean),  # failed for a reason outside the run: may be retried
    UniqueConstraint("experiment_id", "arm", "run_key", name="uq_run"),
)
Index("ix_runs_experiment", runs.c.experiment_id)

curves = Table(
    "curves", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("step", Integer, nullable=False),
    Column("units", Float, nullable=False),  # tokens or samples seen
    Column("train_seconds", Float, nullable=False),
    Column("flops", Float, nullable=False),
    Column("val_loss", Float),
    Column("val_acc", Float),
    Column("train_loss", Float),
    Column("extra", JSON),
)

metrics = Table(
    "metrics", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("value", Float),
)

verdicts = Table(
    "verdicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id", ondelete="CASCADE"),
           nullable=False),
    Column("created_at", Float, nullable=False),
    Column("rating", Integer, nullable=False),
    Column("band", String(30), nullable=False),
    Column("best_arm", String(100)),
    Column("breakdown", JSON, nullable=False),  # component -> {"points": p, "max": m, ...}
    Column("critique", JSON, nullable=False),  # list of lines
    Column("rubric_version", String(20), nullable=False),
)
Index("ix_verdicts_experiment", verdicts.c.experiment_id)
