"""citus-ha: every decision that keeps a Citus coordinator's pg_dist_node in step with an HA
manager, as a sandboxed WebAssembly component (contract 0.4.0), embedded with wasmtime.

    policy = Policy.load()                       # the bundled build (or Policy.load(path))
    agent = Agent.start({"group": 0, "database": "citus"}, "coord1",
                        "postgres://10.0.0.1:5432/citus", PgSession("dbname=citus"))
    agent.heartbeat(now_ms, view)                # a ClusterView from the DCS
    agent.run_turn(now_ms)                       # runs the statements on the session
"""

from ._runtime import Limits
from .agent import Agent
from .errors import CitusHaError, InvalidInput, PolicyLoadError, PolicyTrap, SwapRefused
from .policy import (
    BootstrapStep,
    CitusConfig,
    CreateDatabase,
    CreateExtension,
    Discarded,
    EventOutcome,
    Handler,
    InsertAuthinfo,
    Metrics,
    Policy,
    Queued,
    ReplicationSlot,
    SetCoordinatorHost,
    SuperuserAuth,
    Unchanged,
)
from .session import FaultySession, PgSession, Session, SimSession
from .sim import Simulator
from .statements import (
    Added,
    AddNode,
    Batch,
    Begin,
    Commit,
    Done,
    Failed,
    LoadMetadata,
    Metadata,
    NodeRole,
    PgDistRow,
    RemoveNode,
    Results,
    Rollback,
    RolledBack,
    Statement,
    StatementResult,
    UpdateNode,
)
from .view import ClusterView, GroupView, Member, ViewWriter, cluster_from_dict

__version__ = "0.4.0"

__all__ = [
    "AddNode", "Added", "Agent", "Batch", "Begin", "BootstrapStep", "CitusConfig",
    "CitusHaError", "ClusterView", "Commit", "CreateDatabase", "CreateExtension", "Discarded",
    "Done", "EventOutcome", "Failed", "FaultySession", "GroupView", "Handler", "InsertAuthinfo",
    "InvalidInput", "Limits", "LoadMetadata", "Member", "Metadata", "Metrics", "NodeRole",
    "PgDistRow", "PgSession", "Policy", "PolicyLoadError", "PolicyTrap", "Queued",
    "RemoveNode", "ReplicationSlot", "Results", "Rollback", "RolledBack", "Session",
    "SetCoordinatorHost", "SimSession", "Simulator", "Statement", "StatementResult",
    "SuperuserAuth", "SwapRefused", "Unchanged", "UpdateNode", "ViewWriter", "cluster_from_dict",
]
