#!/usr/bin/env python3
"""XMPP client driver for Nudge's interop test against real XMPP servers.

scripts/interop-test starts an XMPP server (Prosody or ejabberd), Nudge as
its push component and the test-app as the push provider, then runs the
phases of this driver; scripts/demo uses the `demo` phase. Two real clients
(slixmpp) play the users: alice owns the phones, bob writes to her.

    flow          register two devices (FCM like Conversations, APNs) over
                  XEP-0050, enable push (XEP-0357), go offline; an important
                  and an unimportant message each give the expected push
    dead-token    the provider declares a token dead: Nudge removes the
                  registration and answers cancel; what each server does then
    outage        the provider fails (503), then answers too slowly: Nudge
                  answers wait, push stays enabled on the server
    after-restart run after the XMPP server was restarted: Nudge is back and
                  the next message is pushed
    hibernation   XEP-0198: alice's connection drops without closing the
                  stream; a message to the hibernated session is pushed
    crowd         carol and dave register five more devices (four FCM, one
                  APNs) for the scenarios below, and go offline
    unregister-muc
                  Conversations' unregister with the room `channel` hash
                  removes the room registration
    burst         20 messages at once to carol: a few provider requests per
                  device, the last with the newest body; every publish answered
    big-body      a 70 KB body and a 17 KB body of `<` to carol while dave gets
                  messages: the stream stays up, every push delivered
    outage-stream FCM down for 10 s under a stream of messages: each device's
                  newest message delivered after recovery, none twice; then
                  fail_times=2 delivers on the third try
    kill-begin, kill-end
                  around a SIGKILL of Nudge (scripts/interop-test): pushes in
                  the outbox when Nudge dies are delivered after its restart
    drain, drain-after
                  SIGTERM while the provider takes 5 s: every publish answered
                  within dispatch.answer_within_ms, delivered after the restart
    brake         51 dead tokens of one app within a minute: removals stop at
                  the brake, the rest survive, `nudge brake release` removes them
    away-setup    issue 16, on a shared PostgreSQL: eight users (AWAY_USERS)
                  disable their old registrations and register one phone
                  each, FCM and APNs in turn
    away-load     bob writes to them round robin (--rate a second, at most
                  --count, until --stop-file exists) while the script
                  restarts, kills or adds Nudge instances
    away-check    the load's figures: publishes bounced, registrations
                  disabled, pushes lost, duplicates (--expect says which must
                  be zero)
    away-reregister
                  two instances on ejabberd: a device registers a new token,
                  the old one dies, pushes go to the new one through both;
                  `nudge registrations remove` is seen by both at once
    dialects      issue 17: sam registers the Siskin way (register-device with
                  a PushKit second token, push enabled with the node alone),
                  mona the mod_push_appserver v1 way (her own node; bob cannot
                  take it); bob's messages reach both; both unregister
    demo          two demo users; bob writes to alice every few seconds

Each step prints one line, `PASS`/`FAIL`, its name and its duration, and is
appended to --results, where the script counts them. A phase stops at its
first failed step (the later steps depend on it). State shared between the
phases (tokens, nodes) lives in --state.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from typing import Any, Awaitable, Callable

import slixmpp
from slixmpp import JID
from slixmpp.exceptions import IqError, IqTimeout

PUSH_NS = "urn:xmpp:push:0"
HINTS_NS = "urn:xmpp:hints"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

# The issue's bound: a push must reach the provider within 5 s of the message.
PUSH_DEADLINE = 5.0
# Nudge answers a publish within this (dispatch.answer_within_ms, default),
# outboxing the push when the provider is slower.
ANSWER_WITHIN_MS = 200
# How long a push held in the outbox may take to arrive once the provider
# is healthy again (retry backoff).
RECOVERY_DEADLINE = 30.0


class StepFailed(Exception):
    """A check did not hold; the message says what was expected and seen."""


# --------------------------------------------------------------------------
# Settings and shared state


@dataclass
class Settings:
    server: str  # "prosody" | "ejabberd": selects server-specific expectations
    host: str
    port: int
    domain: str  # the users' domain
    push_jid: str  # Nudge's component domain
    control: str  # test-app control URL
    server_log: Path | None
    nudge: list[str]  # command prefix to run the nudge CLI with its config
    state: Path
    results: Path | None
    password: str
    nudge_log: Path | None = None
    nudge_pid: int | None = None


@dataclass
class Device:
    app_command: str  # register-push-<this>
    device_id: str
    token: str
    node: str = ""
    secret: str = ""


@dataclass
class State:
    fcm: Device | None = None
    apns: Device | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def load(path: Path) -> "State":
        if not path.exists():
            return State()
        raw = json.loads(path.read_text())
        return State(
            fcm=Device(**raw["fcm"]) if raw.get("fcm") else None,
            apns=Device(**raw["apns"]) if raw.get("apns") else None,
            extra=raw.get("extra", {}),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    def devices(self) -> list[Device]:
        return [d for d in (self.fcm, self.apns) if d is not None]


# --------------------------------------------------------------------------
# Reporting


class Reporter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.failed = 0

    def record(self, ok: bool, name: str, seconds: float, detail: str = "") -> None:
        verdict = "PASS" if ok else "FAIL"
        line = f"{verdict}  [{self.settings.server}] {name} ({seconds:.2f} s)"
        if detail:
            line += f"\n        {detail}"
        print(line, flush=True)
        if self.settings.results:
            with self.settings.results.open("a") as f:
                f.write(f"{verdict} {self.settings.server}: {name}\n")
        if not ok:
            self.failed += 1

    async def step(self, name: str, body: Callable[[], Awaitable[str | None]]) -> None:
        """Runs one step; its return value is printed under the PASS line
        (the facts it observed). Raises StepFailed to stop the phase."""
        start = time.monotonic()
        try:
            note = await body()
        except (StepFailed, IqError, IqTimeout, TimeoutError, OSError) as e:
            self.record(False, name, time.monotonic() - start, describe(e))
            raise StepFailed(name) from e
        self.record(True, name, time.monotonic() - start, note or "")


def describe(e: BaseException) -> str:
    if isinstance(e, IqError):
        err = e.iq["error"]
        return f"iq error {err['type']}/{err['condition']}: {err['text']}"
    if isinstance(e, IqTimeout):
        return "no answer to the iq"
    if isinstance(e, TimeoutError):
        return f"timed out {e}".strip()
    return str(e)


# --------------------------------------------------------------------------
# The test-app's control API (plain HTTP on 127.0.0.1)


class TestApp:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def pushes(self, token: str | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        query = f"?after_id={after_id}"
        if token:
            query += "&token=" + quote(token, safe="")
        return self._call("GET", "/api/pushes" + query)

    def last_id(self) -> int:
        pushes = self.pushes()
        return pushes[-1]["id"] if pushes else 0

    def webpush_subscribe(self, application_server_key: str) -> dict[str, str]:
        """A browser's subscription at the test-app's push service, for a
        VAPID public key: `endpoint`, `p256dh`, `auth`, `token`."""
        return self._call("POST", "/api/webpush/subscriptions", {"application_server_key": application_server_key})

    def webpush_unsubscribe(self, endpoint: str) -> None:
        """The browser unsubscribes: later pushes to it are answered 410."""
        self._call("DELETE", "/api/webpush/subscriptions/" + quote(endpoint.rsplit("/", 1)[-1], safe=""))

    def set_fault(self, token: str, spec: dict[str, Any]) -> None:
        self._call("PUT", "/api/faults/" + quote(token, safe=""), spec)

    def clear_fault(self, token: str) -> None:
        self._call("DELETE", "/api/faults/" + quote(token, safe=""))

    def set_provider_fault(self, provider: str, spec: dict[str, Any]) -> None:
        """A fault for every token of one mock (`apns` or `fcm`)."""
        self._call("PUT", "/api/provider-faults/" + provider, spec)

    def clear_provider_fault(self, provider: str) -> None:
        self._call("DELETE", "/api/provider-faults/" + provider)

    async def wait_body(
        self, token: str, after_id: int, body: str, deadline: float = PUSH_DEADLINE
    ) -> dict[str, Any]:
        """The first delivered push for `token` after `after_id` whose
        message body is `body`."""
        end = time.monotonic() + deadline
        while True:
            for p in self.pushes(token, after_id):
                if p["delivered"] and push_body(p) == body:
                    return p
            if time.monotonic() >= end:
                seen = [(p["status"], short(push_body(p))) for p in self.pushes(token, after_id)]
                raise StepFailed(
                    f"no delivered push with body {short(body)} for token {token[:20]}… within "
                    f"{deadline:.0f} s (seen: {seen[-6:] or 'none'})"
                )
            await asyncio.sleep(0.1)

    async def wait_push(
        self, token: str, after_id: int, deadline: float = PUSH_DEADLINE, status: int | None = None
    ) -> dict[str, Any]:
        """The first push for `token` recorded after `after_id` (with the
        given HTTP status, if set), polled for up to `deadline` seconds."""
        end = time.monotonic() + deadline
        while True:
            for p in self.pushes(token, after_id):
                if status is None or p["status"] == status:
                    return p
            if time.monotonic() >= end:
                seen = [(p["status"], p.get("reason")) for p in self.pushes(token, after_id)]
                raise StepFailed(
                    f"no push{'' if status is None else f' answered {status}'} for token "
                    f"{token[:16]}… within {deadline:.0f} s (seen: {seen or 'none'})"
                )
            await asyncio.sleep(0.05)


# --------------------------------------------------------------------------
# XMPP clients


class Client(slixmpp.ClientXMPP):
    """A user's client: plain TCP on loopback (the test servers have no
    certificates), SASL SCRAM, optional XEP-0198 stream management."""

    def __init__(self, jid: str, password: str, stream_management: bool = False) -> None:
        super().__init__(jid, password)
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        # Loopback test servers without certificates: SCRAM over plain TCP.
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.register_plugin("xep_0030")  # service discovery
        self.register_plugin("xep_0004")  # data forms
        self.register_plugin("xep_0050")  # ad-hoc commands
        if stream_management:
            self.register_plugin("xep_0198")
        self._started: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        for event in ("failed_all_auth", "no_auth"):
            self.add_event_handler(event, self._on_failed_auth)

    def _on_start(self, _event: Any) -> None:
        self.send_presence()
        if not self._started.done():
            self._started.set_result(None)

    def _on_failed_auth(self, _event: Any) -> None:
        if not self._started.done():
            self._started.set_exception(StepFailed(f"{self.boundjid.bare}: authentication failed"))

    async def login(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.connect(host, port)
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except asyncio.TimeoutError:
            raise StepFailed(f"{self.boundjid.bare}: no session within {timeout:.0f} s") from None

    async def logout(self) -> None:
        """Goes offline cleanly (unavailable presence, closed stream)."""
        self.send_presence(ptype="unavailable")
        await self.disconnect(wait=2.0)

    def drop_connection(self) -> None:
        """Loses the TCP connection without closing the stream, as a phone
        that leaves network coverage: the server hibernates the session."""
        self.abort()


async def login(settings: Settings, user: str, resource: str, sm: bool = False) -> Client:
    client = Client(f"{user}@{settings.domain}/{resource}", settings.password, sm)
    await client.login(settings.host, settings.port)
    return client


async def disco_push_service(client: Client, push_jid: str) -> list[tuple[str, str]]:
    info = await client.plugin["xep_0030"].get_info(jid=JID(push_jid), timeout=5)
    identities = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    features = info["disco_info"]["features"]
    if ("pubsub", "push") not in identities or PUSH_NS not in features:
        raise StepFailed(f"disco#info of {push_jid}: identities {identities}, features {features}")
    return identities


async def register_device(
    client: Client, push_jid: str, device: Device, id_field: str, muc: str | None = None
) -> Device:
    """Conversations' registration: `register-push-<app>` with `token` and
    the device id (and `muc`, a room, for a room's registration); the answer
    carries `jid`, `node` and `secret`."""
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="token", value=device.token)
    form.add_field(var=id_field, value=device.device_id)
    if muc:
        form.add_field(var="muc", value=muc)
    iq = await client.plugin["xep_0050"].send_command(
        push_jid, f"register-push-{device.app_command}", payload=form, timeout=10
    )
    cmd = iq["command"]
    if cmd["status"] != "completed":
        raise StepFailed(f"command status {cmd['status']!r}, expected 'completed'")
    values = cmd["form"].get_values()
    jid, node, secret = values.get("jid"), values.get("node"), values.get("secret")
    if str(jid) != push_jid or not node or not secret:
        raise StepFailed(f"answer form jid={jid!r} node={node!r} secret={'set' if secret else secret!r}")
    return Device(device.app_command, device.device_id, device.token, str(node), str(secret))


async def enable_push(client: Client, push_jid: str, device: Device) -> None:
    """XEP-0357 `<enable/>` with the node and the secret in a
    publish-options form, sent to the user's own server."""
    iq = client.make_iq_set()
    enable = ET.Element(f"{{{PUSH_NS}}}enable", {"jid": push_jid, "node": device.node})
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    form.add_field(var="secret", value=device.secret)
    enable.append(form.xml)
    iq.append(enable)
    await iq.send(timeout=10)


async def disable_push(client: Client, push_jid: str) -> None:
    """XEP-0357 `<disable/>` without a node: every registration of the
    account with `push_jid` is disabled on the user's server."""
    iq = client.make_iq_set()
    iq.append(ET.Element(f"{{{PUSH_NS}}}disable", {"jid": push_jid}))
    try:
        await iq.send(timeout=10)
    except IqError as e:
        # ejabberd: "Push record not found" when there was none to disable.
        if e.iq["error"]["condition"] != "item-not-found":
            raise


async def unregister_room(client: Client, push_jid: str, app: str, device_id: str, room: str) -> None:
    """Conversations' `unregister-push-<app>` for a room: `channel` is
    hex(sha1(room_jid + "\\0" + device_id)), not the room's JID: the same
    hash the FCM push carries as `data.channel` (plugins/README.md)."""
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="channel", value=conversations_account(room, device_id))
    form.add_field(var="android-id", value=device_id)
    iq = await client.plugin["xep_0050"].send_command(
        push_jid, f"unregister-push-{app}", payload=form, timeout=10
    )
    if iq["command"]["status"] != "completed":
        raise StepFailed(f"unregister: command status {iq['command']['status']!r}")


async def register_and_enable(settings: Settings, user: str, devices: list[Device]) -> list[Device]:
    """`user` logs in, registers and enables every device, goes offline."""
    client = await login(settings, user, "phone")
    done = []
    for d in devices:
        id_field = "android-id" if d.app_command == "fcm" else "device-id"
        reg = await register_device(client, settings.push_jid, d, id_field)
        await enable_push(client, settings.push_jid, reg)
        done.append(reg)
    await client.logout()
    return done


def send_chat(sender: Client, to: str, body: str) -> float:
    sender.send_message(mto=JID(to), mbody=body, mtype="chat")
    return time.time()


def send_chat_state(sender: Client, to: str) -> float:
    """A message with only a chat state: nothing a person reads. The store
    hint (XEP-0334) makes ejabberd keep it offline, hence publish it."""
    msg = sender.make_message(mto=JID(to), mtype="chat")
    msg.append(ET.Element(f"{{{CHATSTATES_NS}}}active"))
    msg.append(ET.Element(f"{{{HINTS_NS}}}store"))
    msg.send()
    return time.time()


# --------------------------------------------------------------------------
# Assertions on pushes, Nudge's store and the server's log


def conversations_account(bare_jid: str, device_id: str) -> str:
    return hashlib.sha1(f"{bare_jid}\0{device_id}".encode()).hexdigest()


def check_fcm(push: dict[str, Any], important: bool, account: str) -> str:
    if not push["delivered"]:
        raise StepFailed(f"FCM push not accepted: {push['status']} {push.get('reason')}")
    android = push["payload"].get("android", {})
    want = "high" if important else "normal"
    if android.get("priority") != want:
        raise StepFailed(f"FCM android.priority {android.get('priority')!r}, expected {want!r}")
    data = push["payload"].get("data", {})
    if data.get("account") != account:
        raise StepFailed(f"FCM data.account {data.get('account')!r}, expected {account!r}")
    return f"FCM {want}"


def check_apns(push: dict[str, Any], important: bool) -> str:
    if not push["delivered"]:
        raise StepFailed(f"APNs push not accepted: {push['status']} {push.get('reason')}")
    headers = push["headers"]
    want = ("alert", "10") if important else ("background", "5")
    got = (headers.get("apns-push-type"), headers.get("apns-priority"))
    if got != want:
        raise StepFailed(f"APNs push-type/priority {got}, expected {want}")
    return f"APNs {want[0]}/{want[1]}"


def push_body(push: dict[str, Any]) -> str | None:
    """The message body a push carries (the apps forward it:
    scripts/lib/servers.sh sets include_body)."""
    payload = push.get("payload") or {}
    if push.get("provider") == "webpush":
        # The summary the server sent, decrypted by the test-app.
        value = payload.get("last-message-body")
        return value if isinstance(value, str) else None
    if push.get("provider") == "fcm":
        value = (payload.get("data") or {}).get("last-message-body")
        return value if isinstance(value, str) else None
    alert = (payload.get("aps") or {}).get("alert")
    if isinstance(alert, dict):
        body = alert.get("body")
        return body if isinstance(body, str) else None
    return alert if isinstance(alert, str) else None


def later_push_within_deadline(first_at: dict[str, float], sent_at: dict[str, float], bodies: list[str], i: int) -> bool:
    """Whether a push carrying one of the messages after message i reached
    the phone (`first_at`: body → first delivery, epoch s) within
    PUSH_DEADLINE of message i being sent: coalescing, or the rate limit
    deferring a push through the outbox, lets a later push carry an
    accepted message (away_figures, away_reregister)."""
    return any(first_at.get(b, float("inf")) <= sent_at[bodies[i]] + PUSH_DEADLINE for b in bodies[i + 1:])


def short(text: str | None, n: int = 40) -> str:
    if text is None:
        return "None"
    return repr(text if len(text) <= n else text[:n] + f"…({len(text)} chars)")


def latency(push: dict[str, Any], sent_at: float) -> float:
    return push["received_at_ms"] / 1000.0 - sent_at


def nudge_nodes(settings: Settings) -> set[str]:
    """The nodes Nudge has stored (`nudge registrations list`)."""
    out = subprocess.run(
        settings.nudge + ["registrations", "list", "--limit", "10000"],
        capture_output=True, text=True, timeout=30,
    )
    if out.returncode != 0:
        raise StepFailed(f"nudge registrations list failed: {out.stderr.strip()}")
    return set(re.findall(r"[A-Za-z0-9_-]{16,}", out.stdout))


def nudge_cli(settings: Settings, *args: str) -> str:
    """Runs the nudge CLI; its output, or StepFailed with its error."""
    out = subprocess.run(settings.nudge + list(args), capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise StepFailed(f"nudge {' '.join(args)} failed ({out.returncode}): {(out.stderr or out.stdout).strip()[:500]}")
    return out.stdout + out.stderr


class NudgeLog:
    """Nudge's own log: reconnects, stops, and the brake's error line."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def text(self) -> str:
        if not self.path or not self.path.exists():
            return ""
        return self.path.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def connections(self) -> int:
        return self.count("component connected")

    def last_connected(self) -> float | None:
        """When Nudge last connected (its log's UTC timestamp), in epoch
        seconds."""
        times = re.findall(r"^(\S+)Z\s+INFO .*component connected", self.text(), re.M)
        if not times:
            return None
        return datetime.fromisoformat(times[-1] + "+00:00").timestamp()


class ServerLog:
    """The XMPP server's log, read from a mark on, to see how the server
    took Nudge's answers (both log every error answer to a publish)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path and self.path.exists() else 0

    def since_mark(self) -> str:
        if not self.path or not self.path.exists():
            return ""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", "replace")

    async def wait_for(self, pattern: str, deadline: float = 5.0) -> str:
        end = time.monotonic() + deadline
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.since_mark())
            if m:
                return m.group(0)
            if time.monotonic() >= end:
                raise StepFailed(f"{self.path} shows no line matching /{pattern}/ within {deadline:.0f} s")
            await asyncio.sleep(0.1)


EJABBERD_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")
EJABBERD_SENT = re.compile(r"Send XML on stream = <<\"<iq [^>]*?id='([^']+)'[^>]*>.{0,400}?<publish node='([^']+)'")
# One "Received XML" line may hold several answers.
EJABBERD_RECEIVED = "Received XML on stream = "
EJABBERD_IQ = re.compile(r"<iq ([^>]*)>")
ATTR = re.compile(r"(\w+)='([^']*)'")


@dataclass
class PublishAnswer:
    node: str
    sent: float  # seconds (ejabberd's clock)
    answered: float | None = None
    kind: str = ""  # "result" | "error"


def ejabberd_publishes(log_text: str, nodes: set[str]) -> list[PublishAnswer]:
    """Publishes ejabberd sent to the component for `nodes` since a mark,
    with the time of the answer (its log has microseconds; mod_push logs
    every stanza at loglevel debug)."""
    by_id: dict[str, PublishAnswer] = {}
    order: list[PublishAnswer] = []
    received = ""
    for line in log_text.splitlines():
        t = EJABBERD_TIME.match(line)
        if not t:
            continue
        when = time.mktime(time.strptime(t.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S")) + float(
            "0." + t.group(1).split(".")[1]
        )
        sent = EJABBERD_SENT.search(line)
        if sent and sent.group(2) in nodes:
            p = PublishAnswer(node=sent.group(2), sent=when)
            by_id[sent.group(1)] = p
            order.append(p)
            continue
        if EJABBERD_RECEIVED not in line:
            continue
        # ejabberd logs what it received as TCP delivered it: an answer can
        # be split across two lines, so the chunks are read as one text.
        received += line.split(EJABBERD_RECEIVED, 1)[1].removeprefix('<<"').removesuffix('">>')
        consumed = 0
        for iq in EJABBERD_IQ.finditer(received):
            consumed = iq.end()
            attrs = dict(ATTR.findall(iq.group(1)))
            pending = by_id.get(attrs.get("id", ""))
            if pending and pending.answered is None and attrs.get("type") in ("result", "error"):
                pending.answered = when
                pending.kind = attrs["type"]
        received = received[consumed:][-4096:]
    return order


EJABBERD_CONN = re.compile(r"\(tcp\|(<[0-9.]+>)\) ")
EJABBERD_BODY = re.compile(r"<field var='last-message-body'[^>]*><value>([^<]*)</value>")


@dataclass
class Publish:
    """One publish ejabberd sent to a component connection, and its answer
    on that connection."""

    node: str
    body: str | None
    conn: str  # the ejabberd process of the component connection, e.g. <0.497.0>
    sent: float
    answered: float | None = None
    kind: str = ""  # "result" | "error"


def ejabberd_traffic(log_text: str, nodes: set[str]) -> list[Publish]:
    """Like ejabberd_publishes, with the component connection each publish
    went to (ejabberd logs the connection's process with every stanza) and
    the message body it carries; answers are matched per connection, so
    that several Nudge instances' answers do not mix."""
    by_id: dict[tuple[str, str], Publish] = {}
    order: list[Publish] = []
    received: dict[str, str] = {}
    for line in log_text.splitlines():
        t = EJABBERD_TIME.match(line)
        conn = EJABBERD_CONN.search(line)
        if not t or not conn:
            continue
        when = time.mktime(time.strptime(t.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S")) + float(
            "0." + t.group(1).split(".")[1]
        )
        c = conn.group(1)
        sent = EJABBERD_SENT.search(line)
        if sent:
            if sent.group(2) in nodes:
                body = EJABBERD_BODY.search(line)
                p = Publish(sent.group(2), body.group(1) if body else None, c, when)
                by_id[(c, sent.group(1))] = p
                order.append(p)
            continue
        if EJABBERD_RECEIVED not in line:
            continue
        buf = received.get(c, "") + line.split(EJABBERD_RECEIVED, 1)[1].removeprefix('<<"').removesuffix('">>')
        consumed = 0
        for iq in EJABBERD_IQ.finditer(buf):
            consumed = iq.end()
            attrs = dict(ATTR.findall(iq.group(1)))
            pending = by_id.get((c, attrs.get("id", "")))
            if pending and pending.answered is None and attrs.get("type") in ("result", "error"):
                pending.answered = when
                pending.kind = attrs["type"]
        received[c] = buf[consumed:][-4096:]
    return order


EJABBERD_FIELD_VAR = re.compile(r'var = <<"([^"]+)">>')
EJABBERD_FIELD_VALUE = re.compile(r'values = \[<<"([^"]*)">>\]')


def ejabberd_time(stamp: str) -> float:
    """Epoch seconds of an ejabberd log time stamp."""
    whole, frac = stamp.split(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%d %H:%M:%S")) + float("0." + frac)


def ejabberd_dropped_at_close(log_text: str, domain: str, window: float = 0.1) -> set[str]:
    """Message bodies of publishes ejabberd routed to the component domain
    just before it unregistered a connection's route (within `window` s)
    and never sent on any connection: ejabberd 23.01 hands a stanza routed
    in the moment between reading a connection's `</stream:stream>` and
    unregistering its route to that connection's ending process, which
    neither sends nor bounces it (docs/answers.md). Nudge never sees them."""
    routed: list[tuple[float, str]] = []
    unrouted: list[float] = []
    now = 0.0
    iq_route = False
    var = ""
    for line in log_text.splitlines():
        t = EJABBERD_TIME.match(line)
        if t:
            now = ejabberd_time(t.group(1))
            iq_route = False
            if line.rstrip().endswith(f"Route unregistered: {domain}"):
                unrouted.append(now)
            elif line.rstrip().endswith("Route:"):
                iq_route = True  # the term dump follows; an #iq{ for a publish
            continue
        if not iq_route:
            continue
        if line.startswith("#") and not line.startswith("#iq{"):
            iq_route = False
            continue
        v = EJABBERD_FIELD_VAR.search(line)
        if v:
            var = v.group(1)
        value = EJABBERD_FIELD_VALUE.search(line)
        if value and var == "last-message-body":
            routed.append((now, value.group(1)))
    sent = {m.group(1) for m in EJABBERD_BODY.finditer(log_text)}
    return {body for at, body in routed if body not in sent and any(0 <= u - at <= window for u in unrouted)}


def answer_figures(answers: list[PublishAnswer]) -> str:
    done = [a for a in answers if a.answered is not None]
    if not done:
        return f"{len(answers)} publishes, none answered"
    ms = sorted((a.answered - a.sent) * 1000 for a in done if a.answered is not None)
    kinds = {k: sum(1 for a in done if a.kind == k) for k in ("result", "error")}
    return (
        f"{len(answers)} publishes, {len(done)} answered ({kinds['result']} result, {kinds['error']} error), "
        f"answer time median {ms[len(ms) // 2]:.0f} ms, max {ms[-1]:.0f} ms"
    )


# Regular expressions for the servers' log lines about answers to a publish
# (see captures/*.md).
def cancel_seen(server: str, node: str) -> str:
    if server == "prosody":
        return rf"Got error <cancel:item-not-found:[^>]*> for identifier '[^']*<{re.escape(node)}': error count for this identifier is now at \d+"
    return rf"rejected notification for \S+ \({re.escape(node)}\), disabling push: [^\n]*\(cancel\)"


def wait_seen(server: str, node: str) -> str:
    if server == "prosody":
        return rf"Got error <wait:[^>]*> for identifier '[^']*<{re.escape(node)}': NOT increasing error count"
    return rf"rejected notification for \S+ \({re.escape(node)}\) temporarily: [^\n]*"


def any_answer_seen(server: str, node: str) -> str:
    """An answer to a publish for `node` as the server logs it (Prosody logs
    errors only; ejabberd, at debug, results too)."""
    if server == "prosody":
        return rf"Got error <[^>]*> for identifier '[^']*<{re.escape(node)}'[^\n]*"
    return rf"(accepted|rejected) notification for \S+ \({re.escape(node)}\)[^\n]*"


def publish_answer_seen(server: str, node: str) -> str:
    """Any trace of a publish for `node` in the server's log: sending it
    (both servers log that at debug) or an answer to it."""
    if server == "prosody":
        return (
            rf"(push notification for \S+ to \S+ \({re.escape(node)}\)"
            rf"|Got error <[^>]*> for identifier '[^']*<{re.escape(node)}')"
        )
    return (
        rf"(<publish node='{re.escape(node)}'|accepted notification for \S+ \({re.escape(node)}\)"
        rf"|rejected notification for \S+ \({re.escape(node)}\))"
    )


# --------------------------------------------------------------------------
# Phases

# Issue 16's away users (bob writes to them), one phone each (FCM and APNs
# in turn); every one is registered on both servers by
# scripts/lib/servers.sh. Eight users at 20 messages/s: 400 ms between two
# messages to one phone, far longer than a push to the test-app takes.
AWAY_USERS = ("alice", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan")


def neighbours(delivered: dict[str, int], bodies: list[str], i: int) -> str:
    """Which of the messages around the i-th a device got, for a report."""
    around = [f"{'+' if delivered.get(b) else '-'}{j}" for j, b in enumerate(bodies) if abs(j - i) <= 3]
    return f" [got(+)/not(-) messages by index around it: {' '.join(around)}]"


class Phases:
    def __init__(self, settings: Settings, reporter: Reporter) -> None:
        self.s = settings
        self.r = reporter
        self.app = TestApp(settings.control)
        self.log = ServerLog(settings.server_log)
        self.state = State.load(settings.state)
        self.alice_jid = f"alice@{settings.domain}"

    async def message_pushes(
        self, bob: Client, body: str | None, devices: list[Device], important: bool
    ) -> str:
        """bob writes to alice (a body, or only a chat state); every device
        gets its push within the deadline with the expected priority."""
        mark = self.app.last_id()
        sent = send_chat(bob, self.alice_jid, body) if body else send_chat_state(bob, self.alice_jid)
        notes = []
        for d in devices:
            push = await self.app.wait_push(d.token, mark)
            if d is self.state.fcm:
                kind = check_fcm(push, important, conversations_account(self.alice_jid, d.device_id))
            else:
                kind = check_apns(push, important)
            notes.append(f"{kind} after {latency(push, sent):.2f} s")
        return ", ".join(notes)

    # -- flow ---------------------------------------------------------------
    async def flow(self) -> None:
        s = self.s
        clients: dict[str, Client] = {}

        async def log_in() -> str:
            clients["alice"] = await login(s, "alice", "phone")
            clients["bob"] = await login(s, "bob", "laptop")
            return f"{clients['alice'].boundjid.full}, {clients['bob'].boundjid.full}"

        await self.r.step("alice and bob log in", log_in)
        alice, bob = clients["alice"], clients["bob"]

        async def disco() -> str:
            ids = await disco_push_service(alice, s.push_jid)
            return f"{s.push_jid} identities {ids}, feature {PUSH_NS}"

        await self.r.step("alice's client finds Nudge (disco#info via the server)", disco)

        suffix = uuid.uuid4().hex[:12]
        fcm = Device("fcm", f"{suffix}a1b2c3d4", f"0fcm-{s.server}-{suffix}")
        apns = Device("apns", f"iphone-{suffix}", "0" + uuid.uuid4().hex + uuid.uuid4().hex[:31])

        async def register_fcm() -> str:
            self.state.fcm = await register_device(alice, s.push_jid, fcm, "android-id")
            return f"node {self.state.fcm.node}"

        await self.r.step("register-push-fcm (Conversations: token + android-id) → jid, node, secret", register_fcm)

        async def register_again() -> str:
            again = await register_device(alice, s.push_jid, fcm, "android-id")
            assert self.state.fcm
            if (again.node, again.secret) != (self.state.fcm.node, self.state.fcm.secret):
                raise StepFailed(f"second registration gave node {again.node}, first {self.state.fcm.node}")
            return "same node and secret"

        await self.r.step("the same device registers again → same node and secret", register_again)

        async def register_apns() -> str:
            self.state.apns = await register_device(alice, s.push_jid, apns, "device-id")
            return f"node {self.state.apns.node}"

        await self.r.step("register-push-apns (token + device-id)", register_apns)

        async def stored() -> str:
            nodes = nudge_nodes(s)
            missing = [d.node for d in self.state.devices() if d.node not in nodes]
            if missing:
                raise StepFailed(f"nudge registrations list lacks {missing}")
            return "nudge registrations list shows both nodes"

        await self.r.step("Nudge stored both registrations", stored)

        async def enable() -> str:
            for d in self.state.devices():
                await enable_push(alice, s.push_jid, d)
            return "server answered result to both <enable/>"

        await self.r.step("alice enables push for both devices (XEP-0357 <enable/> + secret)", enable)
        self.state.save(s.state)

        async def go_offline() -> None:
            await alice.logout()

        await self.r.step("alice goes offline", go_offline)

        devices = self.state.devices()
        await self.r.step(
            "bob → alice, important message: FCM high priority, APNs alert/10, ≤ 5 s",
            lambda: self.message_pushes(bob, "Hello alice, are you there?", devices, True),
        )
        # Prosody publishes chat states for offline users with an empty
        # body; ejabberd publishes stored (store-hinted) ones with no form.
        await self.r.step(
            "bob → alice, chat state only: FCM normal priority, APNs background/5, ≤ 5 s",
            lambda: self.message_pushes(bob, None, devices, False),
        )
        await bob.logout()

    # -- dead token ----------------------------------------------------------
    async def dead_token(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:12]
        doomed = Device("fcm", f"old-phone-{suffix}", f"0fcm-doomed-{suffix}")
        clients: dict[str, Client] = {}

        async def setup() -> str:
            alice = await login(s, "alice", "phone")
            clients["bob"] = await login(s, "bob", "laptop")
            reg = await register_device(alice, s.push_jid, doomed, "android-id")
            doomed.node, doomed.secret = reg.node, reg.secret
            await enable_push(alice, s.push_jid, doomed)
            await alice.logout()
            return f"third device (FCM) node {doomed.node}"

        await self.r.step("alice registers and enables a third device, goes offline", setup)
        bob = clients["bob"]
        all_devices = self.state.devices() + [doomed]

        async def pushed_while_alive() -> str:
            mark = self.app.last_id()
            sent = send_chat(bob, self.alice_jid, "Before the old phone is gone")
            for d in all_devices:
                push = await self.app.wait_push(d.token, mark)
                if not push["delivered"]:
                    raise StepFailed(f"push for {d.token[:16]}… answered {push['status']}")
            return f"3 pushes, last after {time.time() - sent:.2f} s"

        await self.r.step("a message reaches all three devices", pushed_while_alive)

        async def make_dead() -> str:
            self.app.set_fault(doomed.token, {"kind": "dead"})
            self.log.mark()
            mark = self.app.last_id()
            send_chat(bob, self.alice_jid, "The old phone was wiped")
            push = await self.app.wait_push(doomed.token, mark, status=404)
            for d in self.state.devices():
                await self.app.wait_push(d.token, mark, status=200)
            return f"FCM answered 404 {push.get('reason')} for the doomed token; the others got theirs"

        await self.r.step("token made dead at the test-app; next message → FCM 404 UNREGISTERED", make_dead)

        async def removed() -> str:
            end = time.monotonic() + 5
            while doomed.node in nudge_nodes(s):
                if time.monotonic() > end:
                    raise StepFailed(f"node {doomed.node} still listed by nudge registrations list")
                await asyncio.sleep(0.2)
            kept = [d.node for d in self.state.devices() if d.node not in nudge_nodes(s)]
            if kept:
                raise StepFailed(f"the healthy registrations {kept} were removed too")
            return "gone from nudge registrations list; the two others kept"

        await self.r.step("Nudge removed the dead registration", removed)

        async def cancel_answered() -> str:
            try:
                line = await self.log.wait_for(cancel_seen(s.server, doomed.node), deadline=2.0)
                return f"{s.server} log: {line}"
            except StepFailed:
                pass
            # Within Nudge's coalescing window the publish was queued and
            # answered `result`; the retry found the token dead and removed
            # the registration, so the next publish is `item-not-found`.
            send_chat(bob, self.alice_jid, "Anyone on the old phone?")
            line = await self.log.wait_for(cancel_seen(s.server, doomed.node))
            return f"{s.server} log (next publish, after a coalesced one): {line}"

        await self.r.step(f"{s.server} got a cancel error (item-not-found) for it", cancel_answered)

        # What each server does next differs (captures/*.md): ejabberd deleted
        # the registration at the first cancel error; Prosody counts errors
        # and disables at push_max_errors (16).
        async def next_message() -> str:
            self.log.mark()
            mark = self.app.last_id()
            send_chat(bob, self.alice_jid, "Anyone on the old phone?")
            for d in self.state.devices():  # the control: the server did publish
                await self.app.wait_push(d.token, mark, status=200)
            pattern = publish_answer_seen(s.server, doomed.node)
            if s.server == "ejabberd":
                await asyncio.sleep(1.0)  # its publishes go out together; give the doomed one time
                seen = re.search(pattern, self.log.since_mark())
                if seen:
                    raise StepFailed(f"ejabberd still published to the removed node: {seen.group(0)}")
                if self.app.pushes(doomed.token, mark):
                    raise StepFailed("a push reached the dead token")
                return "no publish for the removed node (push disabled at the first cancel), the others pushed"
            line = await self.log.wait_for(cancel_seen(s.server, doomed.node))
            if self.app.pushes(doomed.token, mark):
                raise StepFailed("a push reached the dead token")
            count = re.search(r"now at (\d+)", line)
            return (
                f"Prosody still publishes (counts toward push_max_errors=16): "
                f"error count now at {count.group(1) if count else '?'}; no push to the dead token"
            )

        name = (
            "next message: ejabberd publishes no more to the removed node"
            if s.server == "ejabberd"
            else "next message: Prosody publishes again, Nudge answers cancel again (counted)"
        )
        await self.r.step(name, next_message)
        self.state.extra["doomed_node"] = doomed.node
        self.state.save(s.state)
        await bob.logout()

    async def transient_answer(self, node: str) -> str:
        """How the server logged Nudge's answer to a publish for `node` that
        met a transient provider failure: `wait`, or `result` when the push
        went to the outbox (ejabberd logs "accepted"; Prosody logs nothing
        for a result, so a second without any line for the node is taken as
        one). A counted error fails."""
        s = self.s
        if s.server == "ejabberd":
            line = await self.log.wait_for(any_answer_seen(s.server, node), deadline=15)
        else:
            try:
                line = await self.log.wait_for(any_answer_seen(s.server, node), deadline=1.0)
            except StepFailed:
                return "no error logged for the publish (a result)"
        if not re.search(wait_seen(s.server, node) + "|accepted notification", line):
            raise StepFailed(f"a transient failure was answered with an error the server counts: {line}")
        return line

    # -- provider outage -----------------------------------------------------
    async def outage(self) -> None:
        s = self.s
        devices = self.state.devices()
        clients: dict[str, Client] = {}

        async def setup() -> str:
            clients["bob"] = await login(s, "bob", "laptop")
            # A provider that keeps failing: FCM 503 UNAVAILABLE, APNs 503
            # ServiceUnavailable, for every push until cleared.
            assert self.state.fcm and self.state.apns
            self.app.set_fault(self.state.fcm.token, {"kind": "respond", "status": 503, "reason": "UNAVAILABLE"})
            self.app.set_fault(self.state.apns.token, {"kind": "respond", "status": 503, "reason": "ServiceUnavailable"})
            return "test-app answers 503 for both of alice's tokens"

        await self.r.step("provider outage begins", setup)
        bob = clients["bob"]

        async def during() -> str:
            self.log.mark()
            mark = self.app.last_id()
            send_chat(bob, self.alice_jid, "Are you there? (provider down)")
            for d in devices:
                await self.app.wait_push(d.token, mark, status=503)
            answers = []
            for d in devices:
                # Never an error the server counts or acts on: `wait`, or
                # `result` when Nudge holds the push in its outbox.
                answers.append(await self.transient_answer(d.node))
            return f"{s.server} log: " + " | ".join(answers)

        await self.r.step("message during the outage: provider asked, Nudge answers result (outbox) or wait, never cancel", during)

        async def kept() -> str:
            nodes = nudge_nodes(s)
            missing = [d.node for d in devices if d.node not in nodes]
            if missing:
                raise StepFailed(f"registrations {missing} removed after a transient failure")
            return "both still in nudge registrations list"

        await self.r.step("Nudge kept both registrations", kept)

        async def recovered() -> str:
            for d in devices:
                self.app.clear_fault(d.token)
            return await self.message_pushes(bob, "Provider is back?", devices, True)

        await self.r.step(f"provider back: next message is pushed (push still enabled on {s.server})", recovered)

        async def slow() -> str:
            # The provider answers only after 3 s, later than Nudge waits
            # (dispatch.push_timeout_secs, set to 1 by the script).
            assert self.state.fcm
            fcm = self.state.fcm
            self.app.set_fault(fcm.token, {"kind": "delay", "ms": 3000})
            try:
                self.log.mark()
                sent = time.monotonic()
                send_chat(bob, self.alice_jid, "Slow provider?")
                line = await self.transient_answer(fcm.node)
                answered = time.monotonic() - sent
                # Nudge gave up on the request; let the provider's late answer
                # pass before the next step looks for pushes.
                await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - sent)))
            finally:
                self.app.clear_fault(fcm.token)
            if fcm.node not in nudge_nodes(s):
                raise StepFailed("registration removed after a provider timeout")
            return f"answered after {answered:.2f} s; {s.server} log: {line}"

        await self.r.step("slow provider: Nudge stops waiting and answers result (outbox) or wait, registration kept", slow)
        await bob.logout()

    # -- after the XMPP server restarted ---------------------------------------
    async def after_restart(self) -> None:
        s = self.s
        devices = self.state.devices()
        clients: dict[str, Client] = {}

        async def reachable() -> str:
            start = time.monotonic()
            clients["bob"] = await login(s, "bob", "laptop")
            # Nudge reconnects on its own; disco#info through the server
            # answers once it is connected again.
            while True:
                try:
                    await disco_push_service(clients["bob"], s.push_jid)
                    return f"Nudge answers through {s.server} {time.monotonic() - start:.2f} s after bob's login"
                except (IqError, IqTimeout, StepFailed) as e:
                    if time.monotonic() - start > 15:
                        raise StepFailed(f"Nudge not reachable 15 s after the restart: {describe(e)}")
                    await asyncio.sleep(0.2)

        await self.r.step(f"Nudge reconnected to the restarted {s.server}", reachable)
        await self.r.step(
            "message after the restart is pushed (FCM high, APNs alert/10, ≤ 5 s)",
            lambda: self.message_pushes(clients["bob"], "Back after the restart?", devices, True),
        )
        await clients["bob"].logout()

    # -- XEP-0198 hibernation ----------------------------------------------------
    async def hibernation(self) -> None:
        s = self.s
        assert self.state.fcm
        fcm = self.state.fcm
        clients: dict[str, Client] = {}

        async def log_in() -> str:
            alice = await login(s, "alice", "phone", sm=True)
            clients["alice"] = alice
            clients["bob"] = await login(s, "bob", "laptop")
            if not alice.plugin["xep_0198"].enabled_out:
                await alice.wait_until("sm_enabled", 5)
            # Both servers push for a hibernated session only if that session
            # enabled push itself; Conversations enables on every login.
            await enable_push(alice, s.push_jid, fcm)
            # Ack what the server sent at login (offline messages), so that
            # going away leaves nothing unacked to push.
            await asyncio.sleep(0.5)
            alice.plugin["xep_0198"].send_ack()
            await asyncio.sleep(0.3)
            return "stream management enabled with resumption; <enable/> for the FCM device"

        await self.r.step("alice's phone logs in with XEP-0198 and enables push again", log_in)

        async def drop() -> str:
            self.log.mark()
            clients["alice"].drop_connection()
            pattern = (
                r"Session going into hibernation[^\n]*"
                if s.server == "prosody"
                else r"Closing c2s connection for [^\n]*waiting \d+ seconds for stream resumption"
            )
            mark = self.app.last_id()
            line = await self.log.wait_for(pattern)
            # Stanzas still unacked when the session hibernates are pushed at
            # once (both servers); wait them out so that the next push is
            # surely the message's.
            await asyncio.sleep(1.5)
            early = len(self.app.pushes(after_id=mark))
            return f"{s.server} log: {line}; {early} push(es) at the drop itself"

        await self.r.step("alice's TCP connection drops (no </stream:stream>): session hibernated", drop)

        async def pushed() -> str:
            mark = self.app.last_id()
            sent = send_chat(clients["bob"], self.alice_jid, "Hello sleepy alice")
            push = await self.app.wait_push(fcm.token, mark)
            note = check_fcm(push, True, conversations_account(self.alice_jid, fcm.device_id))
            await asyncio.sleep(0.5)
            others = [p["token"][:12] + "…" for p in self.app.pushes(after_id=mark) if p["token"] != fcm.token]
            return f"{note} after {latency(push, sent):.2f} s; pushes to other devices: {others or 'none'}"

        await self.r.step("message to the hibernated session → FCM push, high priority, ≤ 5 s", pushed)
        await clients["bob"].logout()

    # -- more users and devices (for the scenarios below) -----------------------
    def crowd_devices(self) -> dict[str, list[Device]]:
        raw = self.state.extra.get("crowd", {})
        return {user: [Device(**d) for d in devices] for user, devices in raw.items()}

    def crowd_fcm(self) -> list[tuple[str, Device]]:
        return [(u, d) for u, ds in self.crowd_devices().items() for d in ds if d.app_command == "fcm"]

    def crowd_all(self) -> list[tuple[str, Device]]:
        return [(u, d) for u, ds in self.crowd_devices().items() for d in ds]

    def jid(self, user: str) -> str:
        return f"{user}@{self.s.domain}"

    def server_disabled(self, since: str, nodes: set[str]) -> list[str]:
        """Lines of the server's log (from a mark) that show a registration
        of `nodes` disabled or counted against: ejabberd deletes at any
        non-wait error, Prosody counts them."""
        if self.s.server == "ejabberd":
            rx = r"rejected notification for \S+ \(([^)]+)\), disabling push[^\n]*"
        else:
            rx = r"Got error <(?:cancel|auth|modify):[^>]*> for identifier '[^']*<([^']+)'[^\n]*"
        return [m.group(0) for m in re.finditer(rx, since) if m.group(1) in nodes]

    async def reenable(self) -> None:
        """carol and dave log in and enable push again for their devices,
        as Conversations does at every login: an earlier scenario that made
        the server disable a registration does not spill into the next."""
        for user, devices in self.crowd_devices().items():
            client = await login(self.s, user, "phone")
            for d in devices:
                await enable_push(client, self.s.push_jid, d)
            await client.logout()

    async def crowd(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:10]

        async def setup() -> str:
            plan = {
                "carol": [
                    Device("fcm", f"carol-phone-{suffix}", f"0fcm-carol-phone-{suffix}"),
                    Device("fcm", f"carol-tablet-{suffix}", f"0fcm-carol-tablet-{suffix}"),
                    Device("apns", f"carol-iphone-{suffix}", "0" + uuid.uuid4().hex + uuid.uuid4().hex[:31]),
                ],
                "dave": [
                    Device("fcm", f"dave-phone-{suffix}", f"0fcm-dave-phone-{suffix}"),
                    Device("fcm", f"dave-tablet-{suffix}", f"0fcm-dave-tablet-{suffix}"),
                ],
            }
            crowd = {}
            for user, devices in plan.items():
                crowd[user] = [asdict(d) for d in await register_and_enable(s, user, devices)]
            self.state.extra["crowd"] = crowd
            self.state.save(s.state)
            return "carol: 2 FCM + 1 APNs, dave: 2 FCM; push enabled; both offline"

        await self.r.step("carol and dave register and enable 5 devices, go offline", setup)
        bob = await login(s, "bob", "laptop")

        async def pushed() -> str:
            mark = self.app.last_id()
            notes = []
            for user in ("carol", "dave"):
                body = f"Hello {user} {suffix}"
                sent = send_chat(bob, self.jid(user), body)
                for d in self.crowd_devices()[user]:
                    push = await self.app.wait_body(d.token, mark, body)
                    notes.append(f"{latency(push, sent):.2f}")
            return "5 pushes with the body, after " + ", ".join(notes) + " s"

        await self.r.step("a message to each reaches all five devices, body included", pushed)
        await bob.logout()

    # -- Conversations' room unregistration ------------------------------------
    async def unregister_muc(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:10]
        device_id = f"dave-muc-{suffix}"
        room = f"room-{suffix}@conference.{s.domain}"
        clients: dict[str, Client] = {}
        regs: dict[str, Device] = {}

        async def register() -> str:
            dave = await login(s, "dave", "muc")
            clients["dave"] = dave
            plain = Device("fcm", device_id, f"0fcm-dave-muc-{suffix}")
            regs["account"] = await register_device(dave, s.push_jid, plain, "android-id")
            regs["room"] = await register_device(dave, s.push_jid, plain, "android-id", muc=room)
            if regs["room"].node == regs["account"].node:
                raise StepFailed("the room registration got the account's node")
            nodes = nudge_nodes(s)
            if regs["room"].node not in nodes or regs["account"].node not in nodes:
                raise StepFailed("nudge registrations list lacks one of the two")
            return f"account node {regs['account'].node}, room node {regs['room'].node} ({room})"

        await self.r.step("register-push-fcm for the account and, with muc, for a room", register)

        async def unregister() -> str:
            await unregister_room(clients["dave"], s.push_jid, "fcm", device_id, room)
            nodes = nudge_nodes(s)
            if regs["room"].node in nodes:
                raise StepFailed(
                    f"room registration {regs['room'].node} still in nudge registrations list after "
                    f"unregister-push-fcm with channel=sha1(room + NUL + device id) (answered completed)"
                )
            if regs["account"].node not in nodes:
                raise StepFailed("the account's own registration was removed too")
            return "room registration gone from nudge registrations list, the account's kept"

        await self.r.step("unregister-push-fcm with Conversations' channel hash removes the room registration", unregister)
        await clients["dave"].logout()

    # -- a burst to one offline user -------------------------------------------
    async def burst(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        devices = self.crowd_devices()["carol"]
        nodes = {d.node for d in devices}
        bob = await login(s, "bob", "laptop")
        count = 20

        def spread() -> str:
            """Over how long the server sent the publishes (ejabberd's log
            has microseconds; Prosody's only seconds)."""
            if s.server != "ejabberd":
                return ""
            answers = ejabberd_publishes(self.log.since_mark(), {devices[0].node})
            if len(answers) < 2:
                return ""
            return f" (ejabberd sent one device's {len(answers)} publishes over {(answers[-1].sent - answers[0].sent) * 1000:.0f} ms)"

        async def send_burst() -> str:
            self.log.mark()
            mark = self.app.last_id()
            last = ""
            for i in range(1, count + 1):
                last = f"burst {i}/{count} {suffix}"
                send_chat(bob, self.jid("carol"), last)
            missing = []
            for d in devices:
                try:
                    await self.app.wait_body(d.token, mark, last, deadline=10)
                except StepFailed:
                    missing.append(d)
            await asyncio.sleep(1.0)  # a late trailing push would show now
            requests = {d.token: len(self.app.pushes(d.token, mark)) for d in devices}
            figures = ", ".join(f"{d.app_command} {requests[d.token]}" for d in devices)
            if missing:
                seen = {
                    d.device_id.rsplit("-", 1)[0]: [short(push_body(p), 16) for p in self.app.pushes(d.token, mark)]
                    for d in missing
                }
                outbox = nudge_cli(s, "outbox", "status").strip()
                raise StepFailed(
                    f"the newest message {short(last)} reached no push within 10 s on {len(missing)} of "
                    f"{len(devices)} devices: pushed bodies {seen}; requests per device {figures}; "
                    f"nudge outbox status: {outbox}"
                )
            # Coalescing: one push in flight and one trailing push that
            # collects what arrives meanwhile, so a request per provider
            # round trip while the burst arrives; the issue saw one per
            # message (20).
            if any(n > count // 3 for n in requests.values()):
                raise StepFailed(
                    f"provider requests per device for {count} messages: {figures}{spread()} "
                    f"(expected at most {count // 3})"
                )
            return f"provider requests per device for {count} messages: {figures}{spread()}; each last push has {short(last)}"

        await self.r.step(
            f"{count} messages at once to offline carol → at most {count // 3} provider requests per device, newest last",
            send_burst,
        )

        async def answered() -> str:
            end = time.monotonic() + 5
            while True:
                text = self.log.since_mark()
                bad = self.server_disabled(text, nodes)
                if bad:
                    raise StepFailed(f"{s.server} counted an error: {bad[0]}")
                waits = [m for n in nodes for m in re.findall(wait_seen(s.server, n), text)]
                if waits:
                    raise StepFailed(f"{len(waits)} publishes answered wait: {waits[0]}")
                if s.server == "prosody":
                    return "prosody log: no error and no wait for carol's nodes (it logs no results)"
                answers = ejabberd_publishes(text, nodes)
                if len(answers) >= count * len(devices) and all(a.answered for a in answers):
                    return "ejabberd log: " + answer_figures(answers)
                if time.monotonic() > end:
                    raise StepFailed("ejabberd log: " + answer_figures(answers) + f", expected {count * len(devices)} answered")
                await asyncio.sleep(0.2)

        await self.r.step("every publish of the burst answered, none with an error or wait", answered)
        await bob.logout()

    # -- big bodies ----------------------------------------------------------------
    async def big_body(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        crowd = self.crowd_devices()
        carol, dave = crowd["carol"], crowd["dave"]
        nodes = {d.node for d in carol + dave}
        nudge_log = NudgeLog(s.nudge_log)
        bob = await login(s, "bob", "laptop")
        connections = nudge_log.connections()

        async def big(body: str, label: str) -> str:
            self.log.mark()
            mark = self.app.last_id()
            dave_last = ""

            async def dave_stream() -> None:
                nonlocal dave_last
                for i in range(10):
                    dave_last = f"meanwhile {i} {label} {suffix}"
                    send_chat(bob, self.jid("dave"), dave_last)
                    await asyncio.sleep(0.2)

            stream = asyncio.create_task(dave_stream())
            await asyncio.sleep(0.5)
            sent = send_chat(bob, self.jid("carol"), body)
            await stream
            problems: list[str] = []
            notes = []
            end = time.monotonic() + 10
            for d in carol:
                while True:
                    got = [p for p in self.app.pushes(d.token, mark) if p["delivered"]]
                    if got or time.monotonic() > end:
                        break
                    await asyncio.sleep(0.1)
                if not got:
                    seen = [(p["status"], p.get("reason")) for p in self.app.pushes(d.token, mark)]
                    problems.append(f"no push for carol's {d.app_command} device within 10 s (seen: {seen})")
                    continue
                pushed = push_body(got[-1]) or ""
                if not pushed or len(pushed) >= len(body) or not body.startswith(pushed[:32].rstrip("…")):
                    problems.append(f"{d.app_command} push body {short(pushed)}: not a cut of the {len(body)}-char body")
                notes.append(f"{d.app_command} {len(pushed.encode())} B after {latency(got[-1], sent):.2f} s")
            for d in dave:
                try:
                    await self.app.wait_body(d.token, mark, dave_last, deadline=max(0.5, end - time.monotonic()))
                except StepFailed as e:
                    problems.append(f"dave: {e}")
            bad = self.server_disabled(self.log.since_mark(), nodes)
            if bad:
                problems.insert(0, f"{s.server} disabled or counted against {len(bad)} registrations: {bad[0]}")
            if nudge_log.connections() != connections:
                problems.insert(0, (
                    f"Nudge reconnected ({connections} → {nudge_log.connections()} 'component connected' lines): "
                    "the stream was closed"
                ))
            if problems:
                raise StepFailed("; ".join(problems))
            return (
                f"{len(body.encode())} B body ({len(body)} chars) cut to: " + ", ".join(notes)
                + "; dave's 2 devices got his 10 messages' newest; stream up, no reconnect"
            )

        # Each step on its own: one failing does not hide the others.
        for name, body, label in (
            ("70 KB body to offline carol while dave gets 10 messages → pushed (cut), stream stays up",
             ("A long story, line after line. " * 2400)[: 70 * 1024], "70KB"),
            ("17 KB body of '<' (68 KB escaped) to carol while dave gets 10 → pushed (cut), stream stays up",
             "<" * (17 * 1024), "lt"),
        ):
            connections = nudge_log.connections()
            try:
                await self.r.step(name, lambda: big(body, label))
            except StepFailed:
                await asyncio.sleep(1.0)  # Nudge reconnects
                await self.reenable()

        async def still_enabled() -> str:
            mark = self.app.last_id()
            for user in ("carol", "dave"):
                body = f"after the big ones {user} {suffix}"
                send_chat(bob, self.jid(user), body)
                for d in crowd[user]:
                    await self.app.wait_body(d.token, mark, body)
            return "all 5 of carol's and dave's registrations still push: none disabled"

        await self.r.step("next message to carol and dave reaches every device (none disabled)", still_enabled)
        await bob.logout()

    # -- provider outage under a stream of messages --------------------------------
    async def outage_stream(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        crowd = self.crowd_devices()
        fcm = self.crowd_fcm()
        nodes = {d.node for _, d in self.crowd_all()}
        bob = await login(s, "bob", "laptop")
        outage_secs = 10.0
        newest: dict[str, str] = {}
        marks: dict[str, float] = {}

        async def stream() -> str:
            await self.reenable()
            self.log.mark()
            marks["app"] = self.app.last_id()
            self.app.set_provider_fault("fcm", {"kind": "fail_for", "ms": int(outage_secs * 1000)})
            marks["outage_end"] = time.monotonic() + outage_secs
            sent = 0
            users = ("carol", "dave")
            # Every 200 ms for 8 s: all of it inside the outage, so that only
            # the outbox can deliver it.
            for i in range(40):
                user = users[i % 2]
                newest[user] = f"stream {i} to {user} {suffix}"
                send_chat(bob, self.jid(user), newest[user])
                sent += 1
                await asyncio.sleep(0.2)
            failed = [p for p in self.app.pushes(after_id=int(marks["app"])) if p["provider"] == "fcm" and p["status"] == 503]
            text = self.log.since_mark()
            if s.server == "ejabberd":
                answers = "ejabberd log: " + answer_figures(ejabberd_publishes(text, nodes))
            else:
                waits = sum(len(re.findall(wait_seen(s.server, n), text)) for n in nodes)
                answers = f"prosody log: {waits} wait answers (it logs no results)"
            bad = self.server_disabled(text, nodes)
            if bad:
                raise StepFailed(f"{s.server} disabled or counted against a registration: {bad[0]}")
            return f"{sent} messages in 8 s; {len(failed)} FCM requests answered 503 so far; {answers}"

        await self.r.step("FCM answers 503 for 10 s (fail_for, every token); bob writes to carol and dave every 200 ms", stream)

        async def recovered() -> str:
            await asyncio.sleep(max(0.0, marks["outage_end"] - time.monotonic()))
            back = time.time()
            figures = []
            for user, d in fcm:
                push = await self.app.wait_body(d.token, int(marks["app"]), newest[user], deadline=RECOVERY_DEADLINE)
                figures.append((user, d, push["received_at_ms"] / 1000 - back))
            # The APNs device was never down: it has the newest too.
            for d in crowd["carol"]:
                if d.app_command == "apns":
                    await self.app.wait_body(d.token, int(marks["app"]), newest["carol"])
            await asyncio.sleep(1.0)  # anything delivered twice would show now
            notes = []
            for user, d, after in figures:
                pushes = self.app.pushes(d.token, int(marks["app"]))
                bodies = [push_body(p) for p in pushes if p["delivered"]]
                twice = sorted({b for b in bodies if bodies.count(b) > 1}, key=str)
                if twice:
                    raise StepFailed(f"{d.device_id}: delivered twice: {[short(b) for b in twice]}")
                failed = sum(1 for p in pushes if p["status"] == 503)
                label = d.device_id.rsplit("-", 1)[0]
                notes.append(f"{label}: {failed}×503, {len(bodies)} delivered, newest {after:+.1f} s after recovery")
            return "; ".join(notes)

        await self.r.step(
            "FCM back: every FCM device gets its user's newest message, nothing delivered twice", recovered
        )

        async def third_try() -> str:
            d = crowd["dave"][0]
            self.app.set_fault(d.token, {"kind": "fail_times", "times": 2})
            try:
                mark = self.app.last_id()
                body = f"third time lucky {suffix}"
                sent = send_chat(bob, self.jid("dave"), body)
                push = await self.app.wait_body(d.token, mark, body, deadline=RECOVERY_DEADLINE)
            finally:
                self.app.clear_fault(d.token)
            tries = self.app.pushes(d.token, mark)
            statuses = [p["status"] for p in tries]
            if statuses[:3] != [503, 503, 200] or tries[2]["id"] != push["id"]:
                raise StepFailed(f"attempts for dave's phone: {statuses}, expected [503, 503, 200]")
            times = ", ".join(f"{latency(p, sent):.2f}" for p in tries[:3])
            return f"attempts {statuses[:3]} at {times} s after the message"

        await self.r.step("fail_times=2 on dave's phone → delivered on the third try", third_try)
        await bob.logout()

    # -- SIGKILL with pushes in the outbox -------------------------------------------
    async def kill_begin(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        fcm = self.crowd_fcm()
        bob = await login(s, "bob", "laptop")

        async def failing() -> str:
            await self.reenable()
            self.log.mark()
            mark = self.app.last_id()
            self.app.set_provider_fault("fcm", {"kind": "respond", "status": 503, "reason": "UNAVAILABLE"})
            bodies = {}
            for user in ("carol", "dave"):
                bodies[user] = f"before the kill {user} {suffix}"
                send_chat(bob, self.jid(user), bodies[user])
            for _, d in fcm:
                await self.app.wait_push(d.token, mark, status=503)
            await asyncio.sleep(0.5)  # past answer_within_ms: answered, in the outbox
            self.state.extra["kill"] = {"mark": mark, "bodies": bodies}
            self.state.save(s.state)
            text = self.log.since_mark()
            answers = (
                "ejabberd log: " + answer_figures(ejabberd_publishes(text, {d.node for _, d in fcm}))
                if s.server == "ejabberd" else "prosody logs no results"
            )
            return f"FCM answers 503 to all 4 FCM devices; {answers}"

        await self.r.step("FCM failing: messages to carol and dave, pushes fail (rows in the outbox)", failing)
        await bob.logout()

    async def kill_end(self) -> None:
        fcm = self.crowd_fcm()
        kill = self.state.extra.get("kill", {})

        async def delivered() -> str:
            start = NudgeLog(self.s.nudge_log).last_connected() or time.time()
            notes = []
            for user, d in fcm:
                push = await self.app.wait_body(d.token, kill["mark"], kill["bodies"][user], deadline=RECOVERY_DEADLINE)
                notes.append(f"{push['received_at_ms'] / 1000 - start:.2f}")
            return "all 4 FCM devices got the message sent before the kill, " + ", ".join(notes) + " s after Nudge reconnected"

        await self.r.step("after the SIGKILL and the restart (FCM healthy) the outboxed pushes arrive", delivered)

    # -- SIGTERM while the provider is slow ------------------------------------------
    async def drain(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        fcm = self.crowd_fcm()
        nodes = {d.node for _, d in self.crowd_all()}
        nudge_log = NudgeLog(s.nudge_log)
        bob = await login(s, "bob", "laptop")

        async def sigterm() -> str:
            if not s.nudge_pid:
                raise StepFailed("no --nudge-pid given")
            await self.reenable()
            self.log.mark()
            mark = self.app.last_id()
            self.app.set_provider_fault("fcm", {"kind": "delay", "ms": 5000})
            stops = nudge_log.count("stopped")
            bodies = {}
            for user in ("carol", "dave"):
                bodies[user] = f"slow provider at SIGTERM {user} {suffix}"
                send_chat(bob, self.jid(user), bodies[user])
            await asyncio.sleep(0.05)  # the publishes are on their way or being read
            term = time.monotonic()
            os.kill(s.nudge_pid, signal.SIGTERM)
            while nudge_log.count("stopped") == stops:
                if time.monotonic() - term > 15:
                    raise StepFailed("Nudge did not log 'stopped' within 15 s of SIGTERM")
                await asyncio.sleep(0.05)
            stop_secs = time.monotonic() - term
            self.state.extra["drain"] = {"mark": mark, "bodies": bodies}
            self.state.save(s.state)
            await asyncio.sleep(0.5)  # the server logs the last answers
            text = self.log.since_mark()
            bad = self.server_disabled(text, nodes)
            if bad:
                raise StepFailed(f"{s.server} disabled or counted against a registration: {bad[0]}")
            if s.server == "ejabberd":
                answers = ejabberd_publishes(text, nodes)
                figures = answer_figures(answers)
                late = [a for a in answers if a.answered is None or (a.answered - a.sent) * 1000 > ANSWER_WITHIN_MS + 150]
                errors = [a for a in answers if a.kind == "error"]
                if len(answers) < 5 or late or errors:
                    raise StepFailed(f"Nudge stopped {stop_secs:.2f} s after SIGTERM; ejabberd log: {figures} "
                                     f"(expected ≥ 5, each answered result within {ANSWER_WITHIN_MS} ms)")
            else:
                waits = [m for n in nodes for m in re.findall(wait_seen(s.server, n), text)]
                bounced = re.findall(r"Component not connected, bouncing error[^\n]*", text)
                if waits or bounced:
                    raise StepFailed(f"prosody log: {(waits + bounced)[0]}")
                figures = "prosody log: no error, no wait, no bounce (it logs no results, nor milliseconds)"
            return f"Nudge stopped {stop_secs:.2f} s after SIGTERM; {figures}"

        await self.r.step(
            f"FCM takes 5 s; SIGTERM right after messages to carol and dave → every publish answered result ≤ {ANSWER_WITHIN_MS} ms",
            sigterm,
        )
        await bob.logout()

    async def drain_after(self) -> None:
        fcm = self.crowd_fcm()
        drain = self.state.extra.get("drain", {})

        async def delivered() -> str:
            start = NudgeLog(self.s.nudge_log).last_connected() or time.time()
            notes = []
            for user, d in fcm:
                push = await self.app.wait_body(d.token, drain["mark"], drain["bodies"][user], deadline=RECOVERY_DEADLINE)
                notes.append(f"{push['received_at_ms'] / 1000 - start:.2f}")
            return "all 4 FCM devices got the message sent at the SIGTERM, " + ", ".join(notes) + " s after Nudge reconnected"

        await self.r.step("after the restart (FCM fast again) the pushes in flight at the SIGTERM arrive", delivered)

    # -- the brake on mass removal ------------------------------------------------------
    async def brake(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        users = ("carol", "dave", "erin")
        per_user = 17
        doomed: dict[str, list[Device]] = {}
        healthy = [d for _, d in self.crowd_fcm()]
        nudge_log = NudgeLog(s.nudge_log)

        async def register() -> str:
            for user in users:
                wanted = [
                    Device("fcm", f"brake-{user}-{i}-{suffix}", f"dead-brake-{user}-{i}-{suffix}")
                    for i in range(per_user)
                ]
                doomed[user] = await register_and_enable(s, user, wanted)
            return f"{per_user * len(users)} FCM registrations with tokens the test-app declares dead (prefix 'dead')"

        await self.r.step("carol, dave and erin register 51 devices whose tokens are dead, enable push", register)
        dead_nodes = {d.node for ds in doomed.values() for d in ds}
        bob = await login(s, "bob", "laptop")

        async def braked() -> str:
            self.log.mark()
            mark = self.app.last_id()
            errors_before = nudge_log.count("removal brake")
            for user in users:
                send_chat(bob, self.jid(user), f"to every phone of {user} {suffix}")
            end = time.monotonic() + 15
            while True:
                asked = {p["token"] for p in self.app.pushes(after_id=mark) if p["token"].startswith("dead-brake")}
                if len(asked) >= len(dead_nodes) or time.monotonic() > end:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)
            kept = dead_nodes & nudge_nodes(s)
            removed = len(dead_nodes) - len(kept)
            lost = [d.device_id for d in healthy if d.node not in nudge_nodes(s)]
            if lost:
                raise StepFailed(f"healthy registrations removed: {lost}")
            line = next((ln for ln in nudge_log.text().splitlines() if "removal brake" in ln), "")
            if not kept:
                raise StepFailed(f"all {len(dead_nodes)} dead registrations removed ({len(asked)} tokens asked): no brake")
            if nudge_log.count("removal brake") == errors_before or "ERROR" not in line:
                raise StepFailed(f"Nudge's log has no ERROR line naming the removal brake ({removed} removed, {len(kept)} kept)")
            disabled = len(self.server_disabled(self.log.since_mark(), dead_nodes))
            return (
                f"{len(asked)} dead tokens asked, {removed} registrations removed, {len(kept)} kept; "
                f"{s.server} disabled/counted {disabled}; Nudge's log: {line.strip()[:300]}"
            )

        await self.r.step("one message each → the brake stops removals, the rest survive, the log names the cause", braked)

        async def status() -> str:
            out = nudge_cli(s, "brake", "status")
            if "testapp-fcm" not in out:
                raise StepFailed(f"nudge brake status does not name testapp-fcm: {out.strip()[:300]}")
            return "nudge brake status: " + " | ".join(out.strip().splitlines()[:4])

        await self.r.step("nudge brake status shows testapp-fcm held", status)

        async def release() -> str:
            out = nudge_cli(s, "brake", "release", "testapp-fcm", "--apply")
            left = dead_nodes & nudge_nodes(s)
            if left:
                raise StepFailed(f"{len(left)} held registrations still listed after release --apply: {out.strip()[:200]}")
            lost = [d.device_id for d in healthy if d.node not in nudge_nodes(s)]
            if lost:
                raise StepFailed(f"healthy registrations removed by the release: {lost}")
            return "all 51 dead registrations gone, the healthy kept; " + " | ".join(out.strip().splitlines()[:2])

        await self.r.step("nudge brake release testapp-fcm --apply removes the held ones", release)
        await bob.logout()

    # -- issue 16: never away (several instances, handovers, standby) ---------------
    # A steady stream of messages to users whose phones are away, while
    # scripts/interop-test restarts, kills or adds Nudge instances (on a
    # shared PostgreSQL). The script sets dispatch.coalesce_ms = 0, so that
    # every message gets its own push, except a publish that comes while
    # the phone's previous push is still out (or that finds the phone's
    # outbox row, e.g. one a stopped or killed instance left): it is merged
    # into the next push, which then carries a later message of the user
    # (the newest summary; the phone fetches the rest). So a message is lost
    # unless a push carries its body, or its publish was accepted (ejabberd
    # logs a result; Prosody logged no error for the phone during the load)
    # and a push with a later message of the user reached the phone within
    # PUSH_DEADLINE of it ("merged").

    def away_devices(self) -> dict[str, list[Device]]:
        raw = self.state.extra.get("away", {})
        return {user: [Device(**d) for d in devices] for user, devices in raw.items()}

    def away_all(self) -> list[tuple[str, Device]]:
        return [(u, d) for u, ds in self.away_devices().items() for d in ds]

    async def away_reenable(self) -> None:
        """Each away user's phone logs in and enables push again, as
        Conversations does at every login: a registration the server
        disabled in an earlier scenario does not spill into the next."""
        for user, devices in self.away_devices().items():
            client = await login(self.s, user, "phone")
            for d in devices:
                await enable_push(client, self.s.push_jid, d)
            await client.logout()

    async def away_setup(self) -> None:
        s = self.s
        suffix = uuid.uuid4().hex[:8]

        async def setup() -> str:
            away: dict[str, list[dict[str, Any]]] = {}
            for user in AWAY_USERS:
                client = await login(s, user, "phone")
                # The earlier scenarios' registrations (in the SQLite
                # database, unknown to this one) would be answered
                # item-not-found and muddle the figures.
                await disable_push(client, s.push_jid)
                done = []
                if len(away) % 2 == 0:
                    phone = Device("fcm", f"{user}-away-phone-{suffix}", f"0fcm-{user}-away-{suffix}")
                else:
                    phone = Device("apns", f"{user}-away-iphone-{suffix}", "0" + uuid.uuid4().hex + uuid.uuid4().hex[:31])
                for d in (phone,):
                    reg = await register_device(client, s.push_jid, d, "android-id" if d.app_command == "fcm" else "device-id")
                    await enable_push(client, s.push_jid, reg)
                    done.append(asdict(reg))
                away[user] = done
                await client.logout()
            self.state.extra["away"] = away
            self.state.save(s.state)
            return f"{', '.join(AWAY_USERS)}: old registrations disabled, one phone each (FCM, APNs in turn) registered and enabled, offline"

        await self.r.step(f"{len(AWAY_USERS)} users register a phone each on PostgreSQL, go offline", setup)
        bob = await login(s, "bob", "laptop")

        async def pushed() -> str:
            mark = self.app.last_id()
            for user, devices in self.away_devices().items():
                body = f"away check {user} {suffix}"
                send_chat(bob, self.jid(user), body)
                for d in devices:
                    await self.app.wait_body(d.token, mark, body)
            return f"all {len(AWAY_USERS)} phones pushed"

        await self.r.step("a message to each away user reaches the phone", pushed)
        await bob.logout()

    async def away_load(self, count: int, rate: float, stop_file: Path | None, started_file: Path | None) -> None:
        """Bob writes to the away users round robin, `rate` messages a
        second, until `count` are sent or `stop_file` exists (bounded
        either way); what was sent goes to the state for away-check."""
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        users = list(self.away_devices())
        if not users:
            raise StepFailed("no away devices: run away-setup first")
        bob = await login(s, "bob", "laptop")

        async def load() -> str:
            await self.away_reenable()
            self.log.mark()
            mark = self.app.last_id()
            messages: list[list[Any]] = []
            start = time.time()
            if started_file:
                started_file.touch()
            for i in range(count):
                if stop_file and stop_file.exists():
                    break
                user = users[i % len(users)]
                body = f"away {i} {user} {suffix}"
                messages.append([user, body, send_chat(bob, self.jid(user), body)])
                await asyncio.sleep(max(0.0, start + (i + 1) / rate - time.time()))
            await asyncio.sleep(0.5)  # the last ones leave bob's connection
            self.state.extra["load"] = {
                "mark": mark, "log_offset": self.log.offset, "messages": messages,
                "start": start, "end": time.time(),
            }
            self.state.save(s.state)
            return (
                f"{len(messages)} messages in {time.time() - start:.1f} s to {len(users)} users "
                f"({rate:.0f}/s)"
            )

        await self.r.step(f"load: bob writes to {len(users)} away users, {rate:.0f} messages/s", load)
        await bob.logout()

    async def away_settle(self, load: dict[str, Any], deadline: float = RECOVERY_DEADLINE) -> None:
        """Waits until every device has its user's last message, or no push
        came for 3 s (a disabled registration never gets it), and the
        outbox is empty, at most `deadline` seconds; then 1 s more for a
        late duplicate."""
        last: dict[str, str] = {}
        for user, body, _ in load["messages"]:
            last[user] = body
        end = time.monotonic() + deadline
        seen, quiet_since = -1, time.monotonic()
        while time.monotonic() < end:
            pushes = self.app.pushes(after_id=load["mark"])
            got = {(p["token"], push_body(p)) for p in pushes if p["delivered"]}
            if len(pushes) != seen:
                seen, quiet_since = len(pushes), time.monotonic()
            done = all((d.token, last.get(u)) in got for u, d in self.away_all() if u in last)
            if (done or time.monotonic() - quiet_since > 3.0) and self.outbox_empty():
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)

    def outbox_empty(self) -> bool:
        return "outbox empty" in nudge_cli(self.s, "outbox", "status")

    def away_figures(self, load: dict[str, Any]) -> dict[str, Any]:
        """Bounced, disabled, lost, duplicates (and the detail behind them)
        for the load recorded in the state, from the server's log and the
        test-app's record."""
        s = self.s
        devices = self.away_devices()
        nodes = {d.node: (u, d) for u, d in self.away_all()}
        pushes = self.app.pushes(after_id=load["mark"])
        per_user: dict[str, list[str]] = {}
        for user, body, _ in load["messages"]:
            per_user.setdefault(user, []).append(body)
        with s.server_log.open("rb") if s.server_log else open(os.devnull, "rb") as f:
            f.seek(load["log_offset"])
            text = f.read().decode("utf-8", "replace")
        # Whether a publish for a message was accepted: ejabberd logs each
        # answer; Prosody logs errors only, so there a node without any
        # error logged during the load had every publish accepted.
        traffic = ejabberd_traffic(text, set(nodes)) if s.server == "ejabberd" else []
        accepted = {(p.node, p.body) for p in traffic if p.kind == "result"}
        erred = {n for n in nodes if re.search(any_answer_seen(s.server, n), text)} if s.server == "prosody" else set()

        def was_accepted(node: str, body: str) -> bool:
            return (node, body) in accepted if s.server == "ejabberd" else node not in erred

        sent_at = {body: t for _, body, t in load["messages"]}
        lost: list[str] = []
        # Publishes the server dropped itself, never sent to any Nudge.
        server_dropped: list[str] = []
        dropped_by_server = ejabberd_dropped_at_close(text, s.push_jid) if s.server == "ejabberd" else set()
        merged = duplicates = 0
        delivered: dict[str, dict[str, int]] = {}
        first_at: dict[str, dict[str, float]] = {}  # token → body → first delivery (epoch s)

        def later_push_in_time(token: str, bodies: list[str], i: int) -> bool:
            return later_push_within_deadline(first_at[token], sent_at, bodies, i)

        for user, ds in devices.items():
            bodies = per_user.get(user, [])
            for d in ds:
                counts: dict[str, int] = {}
                at: dict[str, float] = {}
                for p in pushes:
                    if p["token"] == d.token and p["delivered"]:
                        b = push_body(p) or ""
                        counts[b] = counts.get(b, 0) + 1
                        at.setdefault(b, p["received_at_ms"] / 1000)
                delivered[d.token] = counts
                first_at[d.token] = at
                for i, body in enumerate(bodies):
                    if counts.get(body):
                        continue
                    # Coalescing: a publish that came while the phone's
                    # previous push was still out, or that found the phone's
                    # outbox row, goes with a later message's push.
                    if was_accepted(d.node, body) and later_push_in_time(d.token, bodies, i):
                        merged += 1
                        continue
                    if body in dropped_by_server:
                        server_dropped.append(f"{d.app_command} of {user}: {body!r}")
                        continue
                    lost.append(f"{d.app_command} of {user}: {body!r}{neighbours(counts, bodies, i)}")
                duplicates += sum(c - 1 for b, c in counts.items() if c > 1 and b in bodies)
        fig: dict[str, Any] = {
            "messages": len(load["messages"]), "lost": lost, "merged": merged, "duplicates": duplicates,
            "server_dropped": server_dropped,
            "disabled": self.server_disabled(text, set(nodes)), "delivered": delivered,
        }
        if s.server == "ejabberd":
            rejected = [m.group(0) for m in re.finditer(r"rejected notification for \S+ \(([^)]+)\)[^\n]*", text)
                        if m.group(1) in nodes]
            fig["bounced"] = rejected
            fig["traffic"] = traffic
            # Every publish a Nudge answered `result` must be pushed.
            unpushed = []
            for p in traffic:
                if p.kind != "result" or p.body is None:
                    continue
                user, d = nodes[p.node]
                bodies = per_user.get(user, [])
                counts = delivered[d.token]
                i = bodies.index(p.body) if p.body in bodies else -1
                if counts.get(p.body) or (i >= 0 and later_push_in_time(d.token, bodies, i)):
                    continue
                unpushed.append(f"{d.app_command} of {user}: {p.body!r} (answered by {p.conn}){neighbours(counts, bodies, i)}")
            fig["unpushed"] = unpushed
            fig["publishes"] = (
                f"{len(traffic)} publishes reached a Nudge over {len({p.conn for p in traffic})} connection(s), "
                f"{sum(1 for p in traffic if p.kind == 'result')} answered result, "
                f"{sum(1 for p in traffic if p.kind == 'error')} error, "
                f"{sum(1 for p in traffic if not p.kind)} unanswered"
            )
        else:
            bounces = re.findall(r"Component not connected, bouncing error for: <iq[^\n]*", text)
            waits = [m for n in nodes for m in re.findall(wait_seen(s.server, n), text)]
            fig["bounced"] = bounces
            fig["unpushed"] = []
            fig["publishes"] = (
                f"prosody log: {len(bounces)} bounced (as wait/remote-server-timeout), "
                f"{len(waits)} wait errors in all (not counted), {len(fig['disabled'])} counted errors"
            )
        return fig

    async def away_check(self, expect: str, label: str) -> None:
        """Figures of the last load; `expect` says which must be zero:
        `clean` (handovers: nothing bounced, disabled, lost or doubled),
        `killed` (every publish answered result is pushed; the rest
        reported), `standby` (no error the server counts; the rest reported)."""
        s = self.s
        load = self.state.extra.get("load")
        if not load:
            raise StepFailed("no load recorded")

        async def check() -> str:
            await self.away_settle(load)
            f = self.away_figures(load)
            summary = (
                f"{label}: {f['messages']} messages, {len(f['bounced'])} publishes bounced, "
                f"{len(f['disabled'])} registrations disabled, {len(f['lost'])} pushes lost, "
                f"{f['duplicates']} duplicates ({f['merged']} merged into a later push); {f['publishes']}"
            )
            if f["server_dropped"]:
                # Not Nudge's to lose: never sent to it (docs/answers.md).
                summary += (
                    f"; {len(f['server_dropped'])} publishes dropped by {s.server} itself at a connection's close, "
                    f"never sent to a Nudge: {f['server_dropped'][:3]}"
                )
            problems = []
            if expect == "clean":
                for key in ("bounced", "disabled", "lost"):
                    if f[key]:
                        problems.append(f"{key}: {f[key][0]}")
                if f["duplicates"]:
                    problems.append(f"{f['duplicates']} duplicates")
            if expect in ("clean", "killed") and f["unpushed"]:
                problems.append(f"{len(f['unpushed'])} publishes answered result never pushed, e.g. {f['unpushed'][0]}")
            if expect == "standby":
                counted = [b for b in f["disabled"]]
                if counted:
                    problems.append(f"{s.server} counted an error: {counted[0]}")
            self.state.extra.setdefault("figures", {})[label] = summary
            self.state.save(s.state)
            if problems:
                raise StepFailed(summary + " — " + "; ".join(problems))
            return summary

        await self.r.step(f"{label}: figures", check)

    async def away_reregister(self) -> None:
        """Two instances on ejabberd: a device registers again with a new
        token (through whichever instance ejabberd picks) and its old token
        dies; publishes go through both; then `nudge registrations remove`
        must be seen by both at once."""
        s = self.s
        suffix = uuid.uuid4().hex[:8]
        devices = self.away_devices()
        user, old = next((u, d) for u, d in self.away_all() if d.app_command == "fcm")
        new = Device(old.app_command, old.device_id, f"0fcm-{user}-new-{suffix}", old.node, old.secret)
        all_nodes = {d.node for _, d in self.away_all()}

        async def reregister() -> str:
            await self.away_reenable()
            self.app.set_fault(old.token, {"kind": "dead"})
            client = await login(s, user, "phone")
            again = await register_device(client, s.push_jid, new, "android-id")
            await client.logout()
            if (again.node, again.secret) != (old.node, old.secret):
                raise StepFailed(f"registering again gave node {again.node}, expected {old.node}")
            return f"same node {old.node}; the old token {old.token[:24]}… is dead at the test-app"

        await self.r.step(f"{user}'s phone registers again with a new token; the old token dies", reregister)
        bob = await login(s, "bob", "laptop")

        async def pushes_go_new() -> str:
            self.log.mark()
            mark = self.app.last_id()
            bodies: list[str] = []
            sent_at: dict[str, float] = {}
            for i in range(12):
                bodies.append(f"new token {i} {suffix}")
                sent_at[bodies[-1]] = time.time()
                send_chat(bob, self.jid(user), bodies[-1])
                await asyncio.sleep(0.25)
            await self.app.wait_body(new.token, mark, bodies[-1])
            await asyncio.sleep(1.0)
            to_old = self.app.pushes(old.token, mark)
            arrived = [p for p in self.app.pushes(new.token, mark) if p["delivered"]]
            first_at: dict[str, float] = {}
            for p in arrived:
                first_at.setdefault(push_body(p) or "", p["received_at_ms"] / 1000)
            text = self.log.since_mark()
            traffic = ejabberd_traffic(text, {old.node})
            accepted = {p.body for p in traffic if p.kind == "result"}
            conns = {p.conn for p in traffic if p.kind}
            # The rule of away_figures: a message whose publish was accepted
            # may go with a later message's push (coalescing, or the
            # per-registration rate limit deferring it through the outbox,
            # where the next publishes merge into it), if that push reaches
            # the phone within PUSH_DEADLINE.
            missing, merged = [], 0
            for i, b in enumerate(bodies):
                if b in first_at:
                    continue
                if b in accepted and later_push_within_deadline(first_at, sent_at, bodies, i):
                    merged += 1
                    continue
                missing.append(b)
            problems = []
            if to_old:
                problems.append(f"{len(to_old)} pushes went to the old token (statuses {[p['status'] for p in to_old][:5]})")
            if missing:
                # What the phone got, and where each publish went, so that a
                # failure explains itself.
                got = [f"{short(push_body(p) or '')}@{p['received_at_ms'] / 1000 % 100:.2f}" for p in arrived]
                went = [
                    f"{short(p.body or '')}→{p.conn} {p.kind or 'unanswered'}@{p.answered % 100 if p.answered else 0:.2f}"
                    for p in traffic
                ]
                problems.append(
                    f"{len(missing)} of {len(bodies)} messages not pushed to the new token: {missing[:3]}; "
                    f"pushes that arrived: {got}; publishes: {went}"
                )
            if old.node not in nudge_nodes(s):
                problems.append("the registration was removed")
            bad = self.server_disabled(text, {old.node})
            if bad:
                problems.append(f"{s.server} disabled it: {bad[0]}")
            note = (
                f"{len(bodies)} messages: all pushed to the new token ({merged} merged into a later push), none to the old; "
                f"answered over {len(conns)} connection(s); registration kept, push enabled"
            )
            if problems:
                raise StepFailed("; ".join(problems) + f" (answered over {len(conns)} connection(s))")
            if len(conns) < 2:
                raise StepFailed(note + ": expected publishes through both instances")
            return note

        try:
            await self.r.step("messages through both instances: every push to the new token, the device stays enabled", pushes_go_new)
        except StepFailed:
            pass  # reported; the removal below does not depend on it

        async def removed() -> str:
            for node in sorted(all_nodes):
                nudge_cli(s, "registrations", "remove", node)
            tokens = {d.token for _, d in self.away_all()} | {new.token}
            conns: set[str] = set()
            rounds = results = pushed = 0
            # ejabberd picks a connection at random for each publish: up to
            # three rounds (push enabled again on the server, which does not
            # ask Nudge) until both instances have answered.
            while rounds < 3 and len(conns) < 2:
                rounds += 1
                if rounds > 1:
                    await self.away_reenable()
                self.log.mark()
                mark = self.app.last_id()
                for u in devices:
                    send_chat(bob, self.jid(u), f"after the removal {u} {rounds} {suffix}")
                end = time.monotonic() + 5
                while True:
                    text = self.log.since_mark()
                    cancels = {n for n in all_nodes if re.search(cancel_seen(s.server, n), text)}
                    if cancels == all_nodes or time.monotonic() > end:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.3)
                answered = [p for p in ejabberd_traffic(self.log.since_mark(), all_nodes) if p.kind]
                conns |= {p.conn for p in answered if p.kind == "error"}
                results += sum(1 for p in answered if p.kind == "result")
                pushed += sum(1 for p in self.app.pushes(after_id=mark) if p["token"] in tokens)
                if cancels != all_nodes or results or pushed:
                    text = self.log.since_mark()
                    others = re.findall(r"rejected notification for [^\n]*", text)
                    raise StepFailed(
                        f"round {rounds}: {len(all_nodes - cancels)} of {len(all_nodes)} publishes not answered "
                        f"item-not-found ({results} answered result); {pushed} pushes for removed registrations; "
                        f"ejabberd log: {answer_figures(ejabberd_publishes(text, all_nodes))}; "
                        f"other rejections: {others[:2] or 'none'}; still listed: "
                        f"{len(all_nodes & nudge_nodes(s))}"
                    )
            note = (f"{len(all_nodes)} registrations removed; every next publish answered item-not-found "
                    f"over {len(conns)} connection(s) ({rounds} round(s) of {len(all_nodes)} publishes), no push")
            if len(conns) < 2:
                raise StepFailed(note + ": expected answers from both instances (ejabberd picks one at random per publish)")
            return note

        await self.r.step("nudge registrations remove → both instances answer item-not-found at once", removed)
        await bob.logout()

    # -- demo ----------------------------------------------------------------
    async def demo(self, seconds: float, every: float) -> None:
        """Not a test: shows the system working, in the terminal and on the
        test-app's live page."""
        s = self.s
        alice = await login(s, "alice", "phone")
        bob = await login(s, "bob", "laptop")
        android = await register_device(
            alice, s.push_jid, Device("fcm", "demo-android", "0fcm-demo-alice-android"), "android-id"
        )
        iphone = await register_device(
            alice, s.push_jid, Device("apns", "demo-iphone", "0" + "a1ce" * 15 + "000"), "device-id"
        )
        for d in (android, iphone):
            await enable_push(alice, s.push_jid, d)
        print(f"demo: alice registered her Android phone (FCM, node {android.node}) and her iPhone (APNs, node {iphone.node})")
        await alice.logout()
        print("demo: alice went offline; bob writes to her every few seconds (Ctrl-C stops):", flush=True)
        lines = [
            "Hi alice! Lunch today?", "I'll be at the usual place.", "Bring the slides, please.",
            "Running five minutes late.", "The meeting moved to 3 pm.", "Did you see the release notes?",
        ]
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            mark = self.app.last_id()
            if n % 4 == 0:
                sent = send_chat_state(bob, self.alice_jid)
                what = "bob is typing… (a chat state only)"
            else:
                body = lines[n % len(lines)]
                sent = send_chat(bob, self.alice_jid, body)
                what = f"bob: {body!r}"
            seen = []
            for name, d in (("Android", android), ("iPhone", iphone)):
                try:
                    push = await self.app.wait_push(d.token, mark)
                except StepFailed:
                    seen.append(f"{name}: no push")
                    continue
                ms = latency(push, sent) * 1000
                if d is android:  # Conversations gets a data message and fetches the rest
                    priority = push["payload"].get("android", {}).get("priority")
                    seen.append(f"{name}: FCM data message, {priority} priority, {ms:.0f} ms")
                else:
                    h = push["headers"]
                    seen.append(f"{name}: APNs {h.get('apns-push-type')} push, priority {h.get('apns-priority')}, {ms:.0f} ms")
            print(f"demo: #{n} {what}  →  " + ", ".join(seen), flush=True)
            await asyncio.sleep(max(0.0, every - (time.time() - sent)))
        await bob.logout()

    # -- dialects (issue 17: Siskin/Tigase, mod_push_appserver v1) -------------
    async def dialects(self) -> None:
        """sam's client speaks Siskin's dialect (register-device, a PushKit
        second token, push enabled with the node alone), mona's Monal's
        older mod_push_appserver one (v1-register-push with a node of her
        own, enabled with node and secret); bob writes to each while away."""
        s = self.s
        clients: dict[str, Client] = {}
        suffix = uuid.uuid4().hex[:12]
        sam_token = uuid.uuid4().hex + uuid.uuid4().hex
        sam_voip = uuid.uuid4().hex + uuid.uuid4().hex
        mona_node = str(uuid.uuid4()).upper()
        mona_token = f"0fcm-v1-{s.server}-{suffix}"
        found: dict[str, str] = {}

        async def log_in() -> str:
            for user, resource in (("sam", "iphone"), ("mona", "iphone"), ("bob", "laptop")):
                clients[user] = await login(s, user, resource)
            return ", ".join(c.boundjid.full for c in clients.values())

        await self.r.step("sam, mona and bob log in", log_in)
        sam, mona, bob = clients["sam"], clients["mona"], clients["bob"]

        async def siskin_disco() -> str:
            # Siskin: disco#items on its own server, then disco#info on each
            # item, looking for the identity pubsub/push.
            items = await sam.plugin["xep_0030"].get_items(jid=JID(s.domain), timeout=5)
            jids = [str(i[0]) for i in items["disco_items"]["items"]]
            for jid in jids:
                try:
                    info = await sam.plugin["xep_0030"].get_info(jid=JID(jid), timeout=5)
                except (IqError, IqTimeout):
                    continue
                ids = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
                if ("pubsub", "push") in ids:
                    features = info["disco_info"]["features"]
                    tigase = sorted(f for f in features if f.startswith("tigase:push:"))
                    if len(tigase) != 3:
                        raise StepFailed(f"{jid}: Tigase features {tigase}")
                    found["jid"] = jid
                    return f"{jid} among {len(jids)} items: pubsub/push, {', '.join(tigase)}"
            raise StepFailed(f"no item with identity pubsub/push among {jids}")

        await self.r.step(
            "Siskin-style discovery: the server's disco#items lists Nudge (pubsub/push, Tigase features)",
            siskin_disco,
        )

        async def siskin_register() -> str:
            form = sam.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="provider", value="tigase:messenger:apns:1")
            form.add_field(var="device-token", value=sam_token)
            form.add_field(var="device-second-token", value=sam_voip)
            iq = await sam.plugin["xep_0050"].send_command(
                found["jid"], "register-device", payload=form, timeout=10
            )
            cmd = iq["command"]
            if cmd["status"] != "completed":
                raise StepFailed(f"command status {cmd['status']!r}")
            values = cmd["form"].get_values()
            node, size = values.get("node"), values.get("max-payload-size")
            if not node or values.get("secret") or not str(size or "").isdigit():
                raise StepFailed(f"answer form {values}")
            found["node"] = str(node)
            return f"node {node}, max-payload-size {size}, features {values.get('features')}"

        await self.r.step("register-device (APNs token + PushKit second token) → node, no secret", siskin_register)

        async def siskin_enable() -> str:
            iq = sam.make_iq_set()
            iq.append(ET.Element(f"{{{PUSH_NS}}}enable", {"jid": found["jid"], "node": found["node"]}))
            await iq.send(timeout=10)
            await sam.logout()
            return "<enable/> with the node and no publish-options accepted; sam offline"

        await self.r.step("sam enables push with the node alone, goes offline", siskin_enable)

        async def siskin_push() -> str:
            mark = self.app.last_id()
            sent = send_chat(bob, f"sam@{s.domain}", "Hello sam on Siskin")
            push = await self.app.wait_push(sam_token, mark)
            if not push["delivered"]:
                raise StepFailed(f"APNs answered {push['status']} {push.get('reason')}")
            return f"APNs push to sam's token after {latency(push, sent):.2f} s ({check_apns(push, True)})"

        await self.r.step("bob → sam: the push reaches sam's APNs token", siskin_push)

        async def v1_register() -> str:
            form = mona.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="type", value="fcm")
            form.add_field(var="node", value=mona_node)
            form.add_field(var="token", value=mona_token)
            iq = await mona.plugin["xep_0050"].send_command(
                s.push_jid, "v1-register-push", payload=form, timeout=10
            )
            values = iq["command"]["form"].get_values()
            if (str(values.get("jid")), values.get("node")) != (s.push_jid, mona_node) or not values.get("secret"):
                raise StepFailed(f"answer form {values}")
            found["secret"] = str(values["secret"])
            return f"jid {values['jid']}, node {mona_node}, a secret"

        await self.r.step("v1-register-push (type fcm, a device UUID as node) → jid, node, secret", v1_register)

        async def v1_taken() -> str:
            # bob asks for mona's node: refused, and he learns no secret.
            form = bob.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="type", value="fcm")
            form.add_field(var="node", value=mona_node)
            form.add_field(var="token", value="0fcm-bob-takeover")
            try:
                iq = await bob.plugin["xep_0050"].send_command(
                    s.push_jid, "v1-register-push", payload=form, timeout=10
                )
            except IqError as e:
                err = e.iq["error"]
                if (err["type"], err["condition"]) != ("cancel", "conflict"):
                    raise StepFailed(f"expected cancel/conflict, got {err['type']}/{err['condition']}") from None
                if found["secret"] in str(e.iq):
                    raise StepFailed("the refusal carries mona's secret") from None
                return "cancel/conflict, without the secret"
            raise StepFailed(f"bob got mona's node: {iq}")

        await self.r.step("bob asks v1-register-push for mona's node → conflict, no secret", v1_taken)

        async def v1_enable() -> str:
            await enable_push(mona, s.push_jid, Device("v1", mona_node, mona_token, mona_node, found["secret"]))
            await mona.logout()
            return "<enable/> with node and secret accepted; mona offline"

        await self.r.step("mona enables push with node + secret, goes offline", v1_enable)

        async def v1_push() -> str:
            mark = self.app.last_id()
            sent = send_chat(bob, f"mona@{s.domain}", "Hello mona on Monal")
            push = await self.app.wait_push(mona_token, mark)
            if not push["delivered"]:
                raise StepFailed(f"FCM answered {push['status']} {push.get('reason')}")
            return f"FCM push to mona's token after {latency(push, sent):.2f} s"

        await self.r.step("bob → mona: the push reaches mona's FCM token", v1_push)

        async def unregister_both() -> str:
            sam2 = await login(s, "sam", "iphone")
            iq = sam2.make_iq_set()
            iq.append(ET.Element(f"{{{PUSH_NS}}}disable", {"jid": found["jid"], "node": found["node"]}))
            await iq.send(timeout=10)
            form = sam2.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="provider", value="tigase:messenger:apns:1")
            form.add_field(var="device-token", value=sam_token)
            iq = await sam2.plugin["xep_0050"].send_command(
                found["jid"], "unregister-device", payload=form, timeout=10
            )
            if iq["command"]["status"] != "completed":
                raise StepFailed(f"unregister-device: {iq['command']['status']!r}")
            await sam2.logout()
            mona2 = await login(s, "mona", "iphone")
            iq = mona2.make_iq_set()
            iq.append(ET.Element(f"{{{PUSH_NS}}}disable", {"jid": s.push_jid, "node": mona_node}))
            await iq.send(timeout=10)
            form = mona2.plugin["xep_0004"].make_form(ftype="submit")
            form.add_field(var="type", value="fcm")
            form.add_field(var="node", value=mona_node)
            iq = await mona2.plugin["xep_0050"].send_command(
                s.push_jid, "v1-unregister-push", payload=form, timeout=10
            )
            if iq["command"]["status"] != "completed":
                raise StepFailed(f"v1-unregister-push: {iq['command']['status']!r}")
            await mona2.logout()
            left = {found["node"], mona_node} & nudge_nodes(s)
            if left:
                raise StepFailed(f"still registered: {left}")
            return "both disable push and unregister; nudge registrations list has neither node"

        await self.r.step("sam (unregister-device) and mona (v1-unregister-push) unregister", unregister_both)
        await bob.logout()


    async def webpush(self) -> None:
        """wendy uses a browser-based client: it learns the VAPID key from
        the blank register-push-webpush form, subscribes at the test-app's
        push service (standing in for the browser's) and registers the
        subscription; bob writes to her while she is offline and the push
        arrives decrypted; then the browser unsubscribes, the push service
        answers 410 and the registration goes."""
        s = self.s
        found: dict[str, Any] = {}
        clients: dict[str, Client] = {}

        async def blank_form() -> str:
            clients["wendy"] = await login(s, "wendy", "browser")
            clients["bob"] = await login(s, "bob", "laptop")
            iq = await clients["wendy"].plugin["xep_0050"].send_command(
                s.push_jid, "register-push-webpush", timeout=10
            )
            values = iq["command"]["form"].get_values()
            key = values.get("vapid-public-key") or ""
            if isinstance(key, list):  # slixmpp reads a hidden field as multi-valued
                key = key[0] if len(key) == 1 else ""
            key = str(key)
            if len(key) != 87 or not set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"):
                raise StepFailed(f"vapid-public-key {key!r} is not a base64url P-256 point; form {values}")
            found["key"] = key
            return f"the blank form carries vapid-public-key {key[:16]}… and fields {sorted(values)}"

        await self.r.step("register-push-webpush without a form: the blank form carries the VAPID public key", blank_form)
        wendy, bob = clients["wendy"], clients["bob"]

        async def register() -> str:
            sub = self.app.webpush_subscribe(found["key"])
            found["sub"] = sub
            form = wendy.plugin["xep_0004"].make_form(ftype="submit")
            for var in ("endpoint", "p256dh", "auth"):
                form.add_field(var=var, value=sub[var])
            iq = await wendy.plugin["xep_0050"].send_command(
                s.push_jid, "register-push-webpush", payload=form, timeout=10
            )
            cmd = iq["command"]
            values = cmd["form"].get_values()
            jid, node, secret = values.get("jid"), values.get("node"), values.get("secret")
            if cmd["status"] != "completed" or str(jid) != s.push_jid or not node or not secret:
                raise StepFailed(f"status {cmd['status']!r}, answer form {values}")
            found["device"] = Device("webpush", "browser", sub["token"], str(node), str(secret))
            await enable_push(wendy, s.push_jid, found["device"])
            await wendy.logout()
            return f"endpoint {sub['endpoint']} → node {node}; push enabled, wendy offline"

        await self.r.step("wendy registers a browser subscription (endpoint, p256dh, auth) and enables push", register)

        async def push() -> str:
            mark = self.app.last_id()
            body = f"Hello wendy in the browser {uuid.uuid4().hex[:8]}"
            sent = send_chat(bob, f"wendy@{s.domain}", body)
            p = await self.app.wait_body(found["sub"]["token"], mark, body)
            headers = p.get("headers") or {}
            if headers.get("urgency") != "high":
                raise StepFailed(f"urgency {headers.get('urgency')!r} for a message, headers {headers}")
            return (
                f"Web Push {p['status']} after {latency(p, sent):.2f} s over {p.get('http_version')}: "
                f"VAPID checked, decrypted to the body; urgency {headers.get('urgency')}, ttl {headers.get('ttl')}"
            )

        await self.r.step("bob → wendy: the push reaches her subscription, decrypted, VAPID checked", push)

        async def gone() -> str:
            self.app.webpush_unsubscribe(found["sub"]["endpoint"])
            mark = self.app.last_id()
            send_chat(bob, f"wendy@{s.domain}", "after unsubscribing")
            p = await self.app.wait_push(found["sub"]["token"], mark, status=410)
            node = found["device"].node

            async def removed() -> bool:
                return node not in nudge_nodes(s)

            end = time.monotonic() + PUSH_DEADLINE
            while not await removed():
                if time.monotonic() >= end:
                    raise StepFailed(f"the registration {node} is still there after the 410")
                await asyncio.sleep(0.2)
            return f"the push service answered {p['status']}; registration {node} removed"

        await self.r.step("the browser unsubscribes: 410 from its push service removes the registration", gone)
        await bob.logout()


# --------------------------------------------------------------------------


# Phase name on the command line → method of Phases.
PHASES = {
    "flow": "flow",
    "dead-token": "dead_token",
    "outage": "outage",
    "after-restart": "after_restart",
    "hibernation": "hibernation",
    "crowd": "crowd",
    "unregister-muc": "unregister_muc",
    "burst": "burst",
    "big-body": "big_body",
    "outage-stream": "outage_stream",
    "kill-begin": "kill_begin",
    "kill-end": "kill_end",
    "drain": "drain",
    "drain-after": "drain_after",
    "brake": "brake",
    "away-setup": "away_setup",
    "away-reregister": "away_reregister",
    "dialects": "dialects",
    "webpush": "webpush",
}


def parse_args(argv: list[str]) -> tuple[str, Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=[*PHASES, "demo", "away-load", "away-check"])
    p.add_argument("--server", required=True, choices=["prosody", "ejabberd"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the server's c2s port")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--push-jid", default="push.localhost")
    p.add_argument("--password", default="interop-pass")
    p.add_argument("--control", required=True, help="test-app control URL")
    p.add_argument("--server-log", type=Path)
    p.add_argument("--nudge", default="", help="command line of the nudge CLI with its --config")
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--results", type=Path)
    p.add_argument("--nudge-log", type=Path, help="Nudge's log file")
    p.add_argument("--nudge-pid", type=int, help="Nudge's process id (drain sends it SIGTERM)")
    p.add_argument("--seconds", type=float, default=300, help="demo: how long to send")
    p.add_argument("--every", type=float, default=4, help="demo: seconds between messages")
    p.add_argument("--count", type=int, default=400, help="away-load: most messages to send")
    p.add_argument("--rate", type=float, default=20, help="away-load: messages a second")
    p.add_argument("--stop-file", type=Path, help="away-load: stop sending once this file exists")
    p.add_argument("--started-file", type=Path, help="away-load: created when the load begins")
    p.add_argument("--expect", default="clean", choices=["clean", "killed", "standby"], help="away-check")
    p.add_argument("--label", default="load", help="away-check: the scenario's name in its step line")
    a = p.parse_args(argv)
    settings = Settings(
        server=a.server, host=a.host, port=a.port, domain=a.domain, push_jid=a.push_jid,
        control=a.control, server_log=a.server_log, nudge=a.nudge.split(), state=a.state,
        results=a.results, password=a.password, nudge_log=a.nudge_log, nudge_pid=a.nudge_pid,
    )
    return a.phase, settings, a


async def run(phase: str, settings: Settings, args: argparse.Namespace) -> int:
    reporter = Reporter(settings)
    phases = Phases(settings, reporter)
    try:
        if phase == "demo":
            await phases.demo(args.seconds, args.every)
        elif phase == "away-load":
            await phases.away_load(args.count, args.rate, args.stop_file, args.started_file)
        elif phase == "away-check":
            await phases.away_check(args.expect, args.label)
        else:
            await getattr(phases, PHASES[phase])()
    except StepFailed:
        pass  # reported; the rest of the phase depends on the failed step
    return 1 if reporter.failed else 0


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    phase, settings, args = parse_args(sys.argv[1:])
    try:
        sys.exit(asyncio.run(run(phase, settings, args)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
