"""The only place on the agent that starts processes: runtimes, and short tool commands.

One module per idea: `process` (what a runtime is, how it is started and watched; short tool commands),
`runtime_user` (who runtimes run as), `runtime_log` (reading a runtime's log), `health` (whether a runtime
answers) and `lifecycle` (the Supervisor that starts, adopts and stops runtimes, and the restart backoff).
The rest of the agent imports from here.
"""

from __future__ import annotations

from agent.supervisor.health import check_healthy, free_port, local_tls_context
from agent.supervisor.lifecycle import Backoff, RuntimeUnhealthy, Supervisor
from agent.supervisor.process import PYTHON, RuntimeProcess, RuntimeSpec, process_start_time, run_command, watch_exit
from agent.supervisor.runtime_log import error_line, failure, tail
from agent.supervisor.runtime_user import RuntimeUser, RuntimeUserError, resolve_runtime_user

__all__ = [
    "PYTHON",
    "Backoff",
    "RuntimeProcess",
    "RuntimeSpec",
    "RuntimeUnhealthy",
    "RuntimeUser",
    "RuntimeUserError",
    "Supervisor",
    "check_healthy",
    "error_line",
    "failure",
    "free_port",
    "local_tls_context",
    "process_start_time",
    "resolve_runtime_user",
    "run_command",
    "tail",
    "watch_exit",
]
