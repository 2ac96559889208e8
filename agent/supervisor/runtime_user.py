"""Who runtimes run as: the unprivileged runtime user, how it is chosen or made, and how a runtime drops to it.

Entry scripts are user code, so an agent running as root does not run runtimes as root: it runs them as a
`RuntimeUser` for whom only the service's folder is writable, and says at start (not at every deploy) when that
user cannot be had or cannot reach the interpreter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from agent.supervisor.process import RuntimeSpec, run_command

DEFAULT_RUNTIME_USER = "edgeport-runtime"  # made (a system user) by an agent running as root when it is missing


class RuntimeUserError(Exception):
    """The runtime user cannot be had (exit 2 at agent start: runtimes are never silently run as root)."""


@dataclass(frozen=True)
class RuntimeUser:
    """The unprivileged account runtimes run as."""

    name: str
    uid: int
    gid: int


def resolve_runtime_user(name: str | None) -> RuntimeUser | None:
    """Who runtimes run as: None for the agent's own user.

    `name` None: the agent's own user. As root, "" means the default user (made with useradd when it is
    missing), "root" means root on purpose, any other name that existing user. Not root: "", "root" (do not
    switch) and the agent's own user make sense (a process cannot switch user without privilege).
    RuntimeUserError: say why.
    """
    if name is None:
        return None
    if os.geteuid() != 0:
        own = pwd.getpwuid(os.geteuid()).pw_name
        if name not in ("", "root", own):
            raise RuntimeUserError(f"--runtime-user {name}: only an agent running as root can run runtimes as "
                                   f"another user (this agent runs as {own})")  # fmt: skip
        return None
    if name == "root":
        return None  # asked for explicitly
    wanted = name or DEFAULT_RUNTIME_USER
    try:
        entry = pwd.getpwnam(wanted)
    except KeyError:
        if name:
            raise RuntimeUserError(f"--runtime-user {name}: no such user on this device") from None
        entry = _create_user(wanted)
    if entry.pw_uid == 0:
        return None  # another name for root, given on purpose
    user = RuntimeUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    _check_reachable(user)
    return user


def _check_reachable(user: RuntimeUser) -> None:
    """RuntimeUserError unless `user` can start this interpreter (runtimes run on it, or on venvs made from it):
    said once at agent start, not as a failed start of every deploy."""
    args = [sys.executable, "-I", "-c", _DROP_PRIVILEGES, str(user.uid), str(user.gid), sys.executable, "-c", "1"]
    try:
        done = run_command(args, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeUserError(f"cannot check what the runtime user {user.name} may run: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"it exited with code {done.returncode}"])[-1]
        raise RuntimeUserError(
            f"runtimes would run as {user.name}, but {why.removeprefix('error: ')}; let that user reach the "
            f"interpreter, give --runtime-user NAME for one that can, or --runtime-user root"
        )


# Drops to the runtime user, then becomes the runtime (same PID). Popen's own user=/group= would make it fork
# instead of vfork, and a fork of an agent whose gRPC threads run aborts in gRPC's fork handler (SIGABRT).
_DROP_PRIVILEGES = """\
import os, sys
os.setgroups([]); os.setgid(int(sys.argv[2])); os.setuid(int(sys.argv[1]))
try:
    os.execv(sys.argv[3], sys.argv[3:])
except OSError as exc:
    print(f"error: the runtime user (uid {sys.argv[1]}) cannot run {sys.argv[3]}: {exc.strerror} "
          "(it needs search permission on every folder above it)", file=sys.stderr)
    sys.exit(1)
"""


def command_as_user(spec: RuntimeSpec, user: RuntimeUser | None) -> list[str]:
    """The command that starts `spec`'s runtime as `user` (None: as the agent's own user)."""
    argv = spec.argv()
    if user is None:
        return argv
    return [spec.python, "-I", "-c", _DROP_PRIVILEGES, str(user.uid), str(user.gid), *argv]


def _create_user(name: str) -> pwd.struct_passwd:
    """Make the default runtime user (a system account without a login shell or home)."""
    useradd = shutil.which("useradd") or shutil.which("adduser")
    why = "no useradd on this device"
    if useradd is not None:
        args = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name]
        if Path(useradd).name == "adduser":  # busybox: adduser -S -D -H -s SHELL NAME
            args = [useradd, "-S", "-D", "-H", "-s", "/sbin/nologin", name]
        try:
            done = run_command(args, timeout=30)
            said = (done.stderr or done.stdout).strip().splitlines()
            why = (said[-1] if said else f"exit code {done.returncode}") if done.returncode else ""
        except (OSError, subprocess.SubprocessError) as exc:
            why = str(exc)
        if not why:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                why = f"{Path(useradd).name} ran but {name} does not exist"
    raise RuntimeUserError(
        f"the agent runs as root and could not create the user {name} to run runtimes as ({why}); runtimes run "
        f"user code, so they do not run as root: create a user and give --runtime-user NAME, or give "
        f"--runtime-user root to run them as root anyway"
    )
