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
import re
import subprocess
import sys
import time
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
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

# The bound: a push must reach the provider within 5 s of the message.
PUSH_DEADLINE = 5.0


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

    def set_fault(self, token: str, spec: dict[str, Any]) -> None:
        self._call("PUT", "/api/faults/" + quote(token, safe=""), spec)

    def clear_fault(self, token: str) -> None:
        self._call("DELETE", "/api/faults/" + quote(token, safe=""))

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


async def register_device(client: Client, push_jid: str, device: Device, id_field: str) -> Device:
    """Conversations' registration: `register-push-<app>` with `token` and
    the device id; the answer carries `jid`, `node` and `secret`."""
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="token", value=device.token)
    form.add_field(var=id_field, value=device.device_id)
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
            line = await self.log.wait_for(cancel_seen(s.server, doomed.node))
            return f"{s.server} log: {line}"

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
                # Nudge answers wait: never an error the server counts or
                # acts on. (Should Nudge queue transient failures durably
                # and answer result instead, ejabberd's "accepted" line
                # passes too; Prosody logs nothing for a result.)
                line = await self.log.wait_for(any_answer_seen(s.server, d.node), deadline=15)
                if not re.search(wait_seen(s.server, d.node) + "|accepted notification", line):
                    raise StepFailed(f"a transient failure was not answered with wait: {line}")
                answers.append(line)
            return f"{s.server} log: " + " | ".join(answers)

        await self.r.step("message during the outage: provider asked, Nudge answers wait (not cancel)", during)

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
                line = await self.log.wait_for(wait_seen(s.server, fcm.node), deadline=10)
                answered = time.monotonic() - sent
                counted = re.search(cancel_seen(s.server, fcm.node), self.log.since_mark())
                if counted:
                    raise StepFailed(f"a provider timeout was answered with a counted error: {counted.group(0)}")
                # Nudge gave up on the request; let the provider's late answer
                # pass before the next step looks for pushes.
                await asyncio.sleep(max(0.0, 3.2 - (time.monotonic() - sent)))
            finally:
                self.app.clear_fault(fcm.token)
            if fcm.node not in nudge_nodes(s):
                raise StepFailed("registration removed after a provider timeout")
            return f"answered after {answered:.2f} s; {s.server} log: {line}"

        await self.r.step("slow provider: Nudge stops waiting and answers wait, registration kept", slow)
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


# --------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[str, Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["flow", "dead-token", "outage", "after-restart", "hibernation", "demo"])
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
    p.add_argument("--seconds", type=float, default=300, help="demo: how long to send")
    p.add_argument("--every", type=float, default=4, help="demo: seconds between messages")
    a = p.parse_args(argv)
    settings = Settings(
        server=a.server, host=a.host, port=a.port, domain=a.domain, push_jid=a.push_jid,
        control=a.control, server_log=a.server_log, nudge=a.nudge.split(), state=a.state,
        results=a.results, password=a.password,
    )
    return a.phase, settings, a


async def run(phase: str, settings: Settings, args: argparse.Namespace) -> int:
    reporter = Reporter(settings)
    phases = Phases(settings, reporter)
    try:
        if phase == "demo":
            await phases.demo(args.seconds, args.every)
        else:
            await {
                "flow": phases.flow,
                "dead-token": phases.dead_token,
                "outage": phases.outage,
                "after-restart": phases.after_restart,
                "hibernation": phases.hibernation,
            }[phase]()
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
