"""`hub login`, `hub token create|list|revoke` and `hub audit`: who may use the hub, and what they did."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ssl
import sys
from typing import Any

import httpx

from hub.access import DEFAULT_TOKEN_TTL_S, ROLES
from hub.cli.output import print_json, print_table
from hub.cli.parsing import add_command
from hub.client import HubClient, HubUnreachable, default_hub_url
from hub.credentials import save_login, user_config_path
from hub.errors import BadInput
from hub.names import parse_duration, validate_fleet_name

Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]


def register(subparsers: Subparsers) -> None:
    """Add `hub login`, the `hub token` group and `hub audit`."""
    p = add_command(
        subparsers,
        "login",
        help="check an API token against a hub and store it for later commands (and the SDK)",
        description="Check TOKEN against the hub at --hub and store both in your Edgeport config "
        f"({user_config_path()}, mode 0600): later commands and the SDK's Workspace use them when no "
        "--hub/--token or $EDGEPORT_HUB/$EDGEPORT_TOKEN is given. A new hub prints its first admin "
        "token once and keeps it in DATA_DIR/admin.token.",
        examples="  hub login --hub http://127.0.0.1:7070 --token $(cat ./hubdata/admin.token)\n"
        "  hub login --hub https://hub.example.net:7070 --token $(cat admin.token) --ca-fingerprint SHA256\n",
    )
    p.add_argument(
        "--ca-fingerprint",
        metavar="SHA256",
        help="for an https hub: the sha256 of the hub CA certificate to pin (as `hub serve` prints it); without "
        "it the fingerprint is shown and you are asked to confirm it",
    )
    p.set_defaults(func=cmd_login)

    group = add_command(
        subparsers,
        "token",
        help="create, list and revoke API tokens (admin)",
        description="API tokens let people and programs use the hub. Roles: viewer (read everything but "
        "secrets), deployer (register models, deploy, update and delete services, read service keys), "
        "admin (everything: devices, enrollment, tokens, the audit log). A token is shown once; the hub "
        "keeps only its hash. Needs an admin token.",
        examples="  hub token create --name ci --role deployer --expires 30d\n  hub token list\n"
        "  hub token revoke ci\n",
    )
    sub = group.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    p = add_command(
        sub,
        "create",
        help="create a token and print it (once)",
        description="Create an API token with a role and a lifetime (default 90d). Names are never reused.",
        examples="  hub token create --name ci --role deployer --expires 30d\n"
        '  hub token create --name grafana --role viewer --output json   # {"name", "role", "token", "expires"}\n',
    )
    p.add_argument("--name", "-n", required=True, help="token name: letters, digits, '.', '_', '-'")
    p.add_argument("--role", "-r", required=True, choices=ROLES, help="what the token may do")
    p.add_argument(
        "--expires", default=f"{DEFAULT_TOKEN_TTL_S // 86400}d", help="lifetime: 12h, 30d, 365d (default 90d)"
    )
    p.set_defaults(func=cmd_create)
    p = add_command(sub, "list", help="list tokens", description="Every token: role, state, created, expires.")
    p.set_defaults(func=cmd_list)
    p = add_command(
        sub, "revoke", help="revoke a token", description="Revoke the token NAME: it is refused from now on.",
        examples="  hub token revoke ci\n",
    )
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=cmd_revoke)

    p = add_command(
        subparsers,
        "audit",
        help="show the audit log (admin)",
        description="Every call that changed something and every refused call, newest first: when, who "
        "(token name; '-' for none), from where, what, and the result. Kept 90 days by default, bounded "
        "in size. Needs an admin token.",
        examples="  hub audit --since 1h\n  hub audit --who ci --output json\n",
    )
    p.add_argument("--since", metavar="DURATION", help="only the last 90s, 30m, 1h, 2d")
    p.add_argument("--who", metavar="NAME", help="only calls made with this token")
    p.add_argument("--limit", type=int, default=100, help="at most this many records (default 100)")
    p.set_defaults(func=cmd_audit)

    group = add_command(
        subparsers,
        "signing-key",
        help="rotate the key that signs desired state (admin)",
        description="Devices run only desired state the hub signed with a key its CA certified. Rotating makes "
        "a new key, sends every device its desired state again signed by it, and agents that took it up "
        "refuse the old one from then on (say, after the old key file was exposed). Needs an admin token.",
        examples="  hub signing-key rotate\n",
    )
    sub = group.add_subparsers(dest="signing_key_command", metavar="ACTION", required=True)
    p = add_command(sub, "rotate", help="make a new signing key", description="Make a new signing key.")
    p.set_defaults(func=cmd_rotate_signing_key)


def _client(args: argparse.Namespace) -> HubClient:
    return HubClient(getattr(args, "hub", None))


def cmd_login(args: argparse.Namespace) -> int:
    """Check the token (GET /api/v1/whoami) and store it for this hub."""
    token = getattr(args, "token", None)
    if not token:
        raise BadInput("hub login needs --token TOKEN (an admin's first token is in the hub's DATA_DIR/admin.token)")
    url = (getattr(args, "hub", None) or default_hub_url()).rstrip("/")
    ca_pem = _pin_hub_ca(url, args.ca_fingerprint) if url.startswith("https://") else None
    if ca_pem is None and args.ca_fingerprint:
        raise BadInput(f"--ca-fingerprint is for an https hub; {url} is plain http")
    with HubClient(url, token=token, ca_pem=ca_pem) as client:
        me = client.request("GET", "/api/v1/whoami").json()
        path = save_login(client.url, token, ca_pem)
    if args.output == "json":
        print_json({"hub": client.url, "name": me["name"], "role": me["role"], "config": str(path)})
    else:
        print(f"logged in to {client.url} as {me['name']} ({me['role']}); token stored in {path}")
    return 0


def _pin_hub_ca(url: str, fingerprint: str | None) -> str:
    """The hub CA (PEM) of an https hub, once its sha256 matches `fingerprint` or the user confirmed it.

    The CA is fetched without checking the server (nothing secret is sent: no token); it is trusted only by
    its fingerprint, which the user compares with the one `hub serve` printed, as enrollment tokens pin it."""
    try:
        with httpx.Client(verify=False, timeout=10.0) as plain:  # trusted by its fingerprint, checked below
            response = plain.get(f"{url}/api/v1/ca")
    except httpx.TransportError as exc:
        raise HubUnreachable(f"cannot reach the hub at {url}: {exc}") from None
    try:
        der = ssl.PEM_cert_to_DER_cert(response.text) if response.status_code == 200 else b""
    except ValueError:
        der = b""
    if not der:
        raise HubUnreachable(f"the hub at {url} did not give its CA certificate (GET /api/v1/ca: "
                             f"HTTP {response.status_code})")  # fmt: skip
    actual = hashlib.sha256(der).hexdigest()
    if fingerprint is not None:
        wanted = fingerprint.strip().lower().removeprefix("sha256:").replace(":", "")
        if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
            raise BadInput(f"--ca-fingerprint {fingerprint!r}: expected the 64 hex digits of a sha256")
        if not hmac.compare_digest(wanted, actual):
            raise BadInput(f"the hub at {url} presents CA sha256:{actual}, not the --ca-fingerprint given; "
                           "refusing to trust it (wrong hub, or someone in between)")  # fmt: skip
        return response.text
    if not sys.stdin.isatty():
        raise BadInput(f"the hub at {url} presents CA sha256:{actual}: check it against the one `hub serve` "
                       "printed and pass it as --ca-fingerprint (no terminal to ask on)")  # fmt: skip
    print(f"The hub at {url} presents CA sha256:{actual}\n"
          "Compare it with the fingerprint `hub serve` printed (or the end of an enrollment token).")  # fmt: skip
    if input("Trust this CA for this hub? [y/N] ").strip().lower() not in ("y", "yes"):
        raise BadInput("not logged in: the hub's CA was not trusted")
    return response.text


def cmd_create(args: argparse.Namespace) -> int:
    """POST /api/v1/tokens."""
    validate_fleet_name("token", args.name)
    parse_duration(args.expires)  # a bad duration fails here, naming itself
    with _client(args) as client:
        body = {"name": args.name, "role": args.role, "expires": args.expires}
        created = client.request("POST", "/api/v1/tokens", json=body).json()
    if args.output == "json":
        print_json(created)
    else:
        print(f"token {created['name']} ({created['role']}, expires {created['expires']}); shown only now:")
        print(created["token"])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """GET /api/v1/tokens."""
    with _client(args) as client:
        tokens: list[dict[str, Any]] = client.request("GET", "/api/v1/tokens").json()
    if args.output == "json":
        print_json(tokens)
    else:
        print_table(
            [(t["name"], t["role"], t["state"], t["created"], t["expires"]) for t in tokens],
            ["NAME", "ROLE", "STATE", "CREATED", "EXPIRES"],
        )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """DELETE /api/v1/tokens/NAME."""
    with _client(args) as client:
        revoked = client.request("DELETE", f"/api/v1/tokens/{validate_fleet_name('token', args.name)}").json()
    if args.output == "json":
        print_json(revoked)
    else:
        print(f"revoked token {revoked['name']} ({revoked['role']})")
    return 0


def cmd_rotate_signing_key(args: argparse.Namespace) -> int:
    """POST /api/v1/signing-key/rotate."""
    with _client(args) as client:
        rotated = client.request("POST", "/api/v1/signing-key/rotate").json()
    if args.output == "json":
        print_json(rotated)
    else:
        print(f"desired state is now signed with key {rotated['key_id'][:16]}…; {rotated['devices']} device(s) "
              "get it with their next desired state")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """GET /api/v1/audit."""
    if not 1 <= args.limit <= 10_000:
        raise BadInput(f"--limit must be 1 to 10000, got {args.limit}")
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        params["since"] = parse_duration(args.since)
    if args.who:
        params["who"] = args.who
    with _client(args) as client:
        records: list[dict[str, Any]] = client.request("GET", "/api/v1/audit", params=params).json()
    if args.output == "json":
        print_json(records)
    else:
        print_table(
            [(r["at"], r["who"], r["source"], r["action"], r["status"], r["result"]) for r in records],
            ["WHEN", "WHO", "FROM", "WHAT", "STATUS", "RESULT"],
        )
    return 0
