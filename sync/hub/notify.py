"""Notifications: rules, a durable queue in the hub's database, and the sender thread.

A rule names a target (a webhook URL or an e-mail address), a minimum level
and optionally labels a device must carry. When the intake folds a
transition into an alert (``sync/hub/alerts.py``), ``enqueue_for_alerts``
writes one ``notifications`` row per matching rule IN THE SAME TRANSACTION:
a stored alert can never miss its notification, and the unique key
``(rule, device, alert)`` means an alert notifies each rule once — when it
opens at (or escalates to) the rule's level, never again for its other
transitions. A shelved alert notifies no one.

``Notifier`` (a thread) takes due rows, claims each by moving its ``next_at``
forward (a lease two instances cannot both win), delivers it and marks it
sent, or schedules a retry with exponential back-off; after
``notify.max_attempts`` it is ``failed``. A hub that stops with rows pending
sends them when it starts again.

Webhooks get Slack/Teams-compatible JSON (``text``, plus the alert) with
``X-Edge-Hub-Signature-256: sha256=<HMAC-SHA256 of the body with the rule's
secret>`` (and the same over ``timestamp.body`` in ``X-Edge-Hub-Signature-V2``
with ``X-Edge-Hub-Timestamp``, so a receiver can refuse replays). E-mail goes
through the configured SMTP server (``notify.smtp_*``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.core.errors import BadRequestError, ConflictError, NotFoundError
from sync.envelope import new_id
from sync.hub.alerts import LEVELS, level_rank
from sync.hub.db import HubDB, TransientDBError, Tx
from sync.hub.settings import NotifySettings

log = logging.getLogger("edge_hub.notify")

KINDS = ("webhook", "email")
SIGNATURE_HEADER = "X-Edge-Hub-Signature-256"
_RULE_COLUMNS = "id, name, kind, target, min_level, labels, created_at, created_by"


# ------------------------------------------------------------ rules


def add_rule(
    db: HubDB,
    *,
    name: str,
    kind: str,
    target: str,
    min_level: str = "major",
    labels: Mapping[str, str] | None = None,
    secret: str = "",
    created_by: str = "",
) -> dict[str, Any]:
    """Store a rule; a webhook without a secret gets one (returned once, like a token)."""
    if kind not in KINDS:
        raise BadRequestError(f"kind {kind!r}: expected webhook or email")
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadRequestError("a rule's name is 1-64 letters, digits, '-', '_' or '.'")
    if min_level not in LEVELS:
        raise BadRequestError(f"min level {min_level!r}: expected one of {', '.join(LEVELS)}")
    if kind == "webhook":
        if not target.startswith(("http://", "https://")) or len(target) > 2000:
            raise BadRequestError(f"webhook {target!r}: expected an http:// or https:// URL")
        secret = secret or secrets.token_hex(32)
    else:
        local, at, domain = target.partition("@")
        if (
            not at
            or not local
            or ("." not in domain and domain != "localhost")
            or any(c in target for c in " \r\n,;")
        ):
            raise BadRequestError(f"{target!r} is not one e-mail address")
    if db.query("SELECT id FROM notify_rules WHERE name = ?", (name,)):
        raise ConflictError(
            f"a notification rule named {name!r} exists; remove it first or pick another name"
        )
    rule_id = new_id()
    db.execute(
        "INSERT INTO notify_rules (id, name, kind, target, secret, min_level, labels, created_at, created_by) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            rule_id,
            name,
            kind,
            target,
            secret,
            min_level,
            json.dumps(dict(labels or {}), sort_keys=True),
            time.time(),
            created_by,
        ),
    )
    out = get_rule(db, name)
    if kind == "webhook":
        out["secret"] = secret
    return out


def _rule_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["labels"] = json.loads(out.get("labels") or "{}")
    return out


def get_rule(db: HubDB, name: str) -> dict[str, Any]:
    rows = db.query(f"SELECT {_RULE_COLUMNS} FROM notify_rules WHERE name = ? OR id = ?", (name, name))
    if not rows:
        raise NotFoundError(f"no notification rule {name!r}; list them with `edge-hub notify list`")
    return _rule_dict(rows[0])


def list_rules(db: HubDB) -> list[dict[str, Any]]:
    """Every rule with how many notifications it sent, has pending and gave up on."""
    counts: dict[str, dict[str, int]] = {}
    for r in db.query("SELECT rule_id, status, COUNT(*) AS n FROM notifications GROUP BY rule_id, status"):
        counts.setdefault(r["rule_id"], {})[r["status"]] = int(r["n"])
    out = []
    for row in db.query(f"SELECT {_RULE_COLUMNS} FROM notify_rules ORDER BY name"):
        rule = _rule_dict(row)
        c = counts.get(rule["id"], {})
        rule.update(sent=c.get("sent", 0), pending=c.get("pending", 0), failed=c.get("failed", 0))
        out.append(rule)
    return out


def remove_rule(db: HubDB, name: str) -> dict[str, Any]:
    rule = get_rule(db, name)
    with db.transaction() as tx:
        tx.execute("DELETE FROM notifications WHERE rule_id = ? AND status = 'pending'", (rule["id"],))
        tx.execute("DELETE FROM notify_rules WHERE id = ?", (rule["id"],))
    return rule


def send_test(db: HubDB, settings: NotifySettings, name: str) -> dict[str, Any]:
    """Send one test message through a rule now (not queued, not retried): whether it got through."""
    rule = get_rule(db, name)
    secret = db.query("SELECT secret FROM notify_rules WHERE id = ?", (rule["id"],))[0]["secret"]
    alert = {
        "device": "edge-hub",
        "alert_id": "TEST",
        "machine": "",
        "title": f"test message for rule {rule['name']}",
        "level": rule["min_level"],
        "state": "open",
    }
    payload = payload_for(alert, {})
    payload["test"] = True
    try:
        if rule["kind"] == "webhook":
            send_webhook(rule["target"], secret, payload, settings.timeout_s)
        else:
            send_email(settings, rule["target"], payload)
    except DeliveryError as exc:
        return {"rule": rule["name"], "target": rule["target"], "ok": False, "error": str(exc)}
    return {"rule": rule["name"], "target": rule["target"], "ok": True, "error": ""}


def list_notifications(db: HubDB, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    sql = (
        "SELECT n.id, r.name AS rule, n.device, n.alert_id, n.level, n.status, n.attempts, n.created_at, "
        "n.sent_at, n.next_at, n.last_error FROM notifications n LEFT JOIN notify_rules r ON r.id = n.rule_id"
    )
    params: list[Any] = []
    if status:
        sql += " WHERE n.status = ?"
        params.append(status)
    return db.query(sql + " ORDER BY n.created_at DESC LIMIT ?", (*params, int(limit)))


# ------------------------------------------------------------ enqueueing (inside the intake's transaction)


def _text(alert: Mapping[str, Any]) -> str:
    where = f"{alert['device']}" + (f" / {alert['machine']}" if alert.get("machine") else "")
    return f"[{str(alert['level']).upper()}] {where}: {alert['title']} (alert {alert['alert_id']}, {alert['state']})"


def payload_for(alert: Mapping[str, Any], labels: Mapping[str, Any]) -> dict[str, Any]:
    """Slack and Teams show ``text``; everything else is for programs."""
    keys = (
        "device",
        "alert_id",
        "machine",
        "condition",
        "title",
        "level",
        "state",
        "opened_at",
        "updated_at",
    )
    return {
        "text": _text(alert),
        "alert": {k: alert.get(k) for k in keys},
        "transition": alert.get("transition", ""),
        "labels": dict(labels),
    }


def enqueue_for_alerts(tx: Tx, changed: Sequence[Mapping[str, Any]]) -> int:
    """One notification per (rule, alert) for alerts that are open at a rule's level; how many were asked."""
    now = time.time()
    due = [
        a
        for a in changed
        if a["state"] == "open"
        and a.get("transition") in ("opened", "escalated", "open", "")
        and not (a.get("shelved_until") and a["shelved_until"] > now)
    ]
    if not due:
        return 0
    rules = [_rule_dict(r) for r in tx.query(f"SELECT {_RULE_COLUMNS} FROM notify_rules")]
    if not rules:
        return 0
    devices = sorted({a["device"] for a in due})
    labels: dict[str, dict[str, Any]] = {}
    for d in devices:
        found = tx.query("SELECT labels FROM devices WHERE device = ?", (d,))
        labels[d] = json.loads(found[0]["labels"] or "{}") if found else {}
    queued: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for a in due:
        for rule in rules:
            key = (rule["id"], a["device"], a["alert_id"])
            if key in queued or level_rank(str(a["level"])) < level_rank(rule["min_level"]):
                continue
            have = labels.get(a["device"], {})
            if any(str(have.get(k)) != str(v) for k, v in rule["labels"].items()):
                continue
            payload = json.dumps(payload_for(a, have), sort_keys=True)
            queued[key] = (new_id(), *key, a["level"], payload, now, now)
    # the unique key (rule, device, alert) keeps an alert notified once per rule, across batches too
    tx.executemany(
        "INSERT INTO notifications (id, rule_id, device, alert_id, level, payload, status, attempts, "
        "next_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?) "
        "ON CONFLICT (rule_id, device, alert_id) DO NOTHING",
        list(queued.values()),
    )
    return len(queued)


# ------------------------------------------------------------ delivery


class DeliveryError(Exception):
    """One delivery failed; it is retried (the message says why, for the log and `notify log`)."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(url: str, secret: str, payload: Mapping[str, Any], timeout: float) -> None:
    import urllib.error
    import urllib.request

    body = json.dumps(payload, sort_keys=True).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "edge-hub",
        SIGNATURE_HEADER: sign(secret, body),
        "X-Edge-Hub-Timestamp": stamp,
        "X-Edge-Hub-Signature-V2": sign(secret, stamp.encode() + b"." + body),
    }
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DeliveryError(f"{url}: {getattr(exc, 'reason', exc)}") from None


def send_email(settings: NotifySettings, to: str, payload: Mapping[str, Any]) -> None:
    import smtplib
    import ssl
    from email.message import EmailMessage

    if not settings.smtp_host:
        raise DeliveryError("no SMTP server is configured (notify.smtp_host)")
    msg = EmailMessage()
    msg["From"] = settings.smtp_from
    msg["To"] = to
    msg["Subject"] = str(payload["text"])[:200]
    msg.set_content(
        str(payload["text"]) + "\n\n" + json.dumps(payload["alert"], indent=2, sort_keys=True) + "\n"
    )
    try:
        cls = smtplib.SMTP_SSL if settings.smtp_tls else smtplib.SMTP
        with cls(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s) as smtp:
            if settings.smtp_starttls and not settings.smtp_tls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password)
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP {settings.smtp_host}:{settings.smtp_port}: {exc}") from None


class Notifier:
    """Delivers due notifications from the database, in a thread, with retries and back-off."""

    def __init__(self, db: HubDB, settings: NotifySettings, *, poll_s: float = 0.5) -> None:
        self.db = db
        self.settings = settings
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failures = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hub-notify", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except TransientDBError as exc:
                log.warning("notifications wait for the database: %s", exc)
                busy = 0
            except Exception:  # a bug here must not end notifications for good
                log.exception("the notification sender failed; retrying")
                busy = 0
            if not busy:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def run_once(self, now: float | None = None) -> int:
        """Deliver what is due now; how many were tried.

        Up to 20 due rows are claimed in one transaction (each by moving its
        ``next_at`` to a lease: a row another instance claimed first is left
        alone), delivered one by one, and their outcomes written in one more
        transaction: two commits per 20 deliveries, not two per delivery. A
        crash between a delivery and its record sends it again (at least once).
        """
        now = time.time() if now is None else now
        due = self.db.query(
            "SELECT n.id, n.next_at, n.attempts, n.payload, r.kind, r.target, r.secret FROM notifications n "
            "JOIN notify_rules r ON r.id = n.rule_id WHERE n.status = 'pending' AND n.next_at <= ? "
            "ORDER BY n.next_at LIMIT 20",
            (now,),
        )
        if not due:
            return 0
        lease = now + self.settings.timeout_s * 3 + 5
        with self.db.transaction() as tx:
            claimed = [
                row
                for row in due
                if tx.execute(
                    "UPDATE notifications SET next_at = ? WHERE id = ? AND next_at = ? AND status = 'pending'",
                    (lease, row["id"], row["next_at"]),
                )
            ]
        outcomes: list[tuple[Any, ...]] = []
        for row in claimed:
            if self._stop.is_set():
                outcomes.append((int(row["attempts"]), "", "pending", row["next_at"], None, row["id"]))
                continue
            outcomes.append(self._deliver(row))
        if outcomes:
            self._record(outcomes)
        return len(claimed)

    def _record(self, outcomes: list[tuple[Any, ...]]) -> None:
        with self.db.transaction() as tx:
            tx.executemany(
                "UPDATE notifications SET attempts = ?, last_error = ?, status = ?, next_at = ?, "
                "sent_at = COALESCE(?, sent_at) WHERE id = ?",
                outcomes,
            )

    def _deliver(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        """Send one notification; its new (attempts, last_error, status, next_at, sent_at, id)."""
        payload = json.loads(row["payload"])
        attempts = int(row["attempts"]) + 1
        try:
            if row["kind"] == "webhook":
                send_webhook(row["target"], row["secret"], payload, self.settings.timeout_s)
            else:
                send_email(self.settings, row["target"], payload)
        except DeliveryError as exc:
            self.failures += 1
            s = self.settings
            give_up = attempts >= s.max_attempts
            delay = min(s.retry_initial_s * 2 ** (attempts - 1), s.retry_max_s)
            log.warning(
                "notification %s to %s failed (attempt %d%s): %s",
                row["id"],
                row["target"],
                attempts,
                ", giving up" if give_up else f", retry in {delay:.1f} s",
                exc,
            )
            status = "failed" if give_up else "pending"
            return (attempts, str(exc)[:500], status, time.time() + delay, None, row["id"])
        self.sent += 1
        log.info("notified %s of alert (%s)", row["target"], payload["text"])
        return (attempts, "", "sent", row["next_at"], time.time(), row["id"])


def require_smtp(settings: NotifySettings) -> None:
    if not settings.smtp_host:
        raise ConflictError(
            "e-mail rules need an SMTP server: set notify.smtp_host (and smtp_port, smtp_from) in the "
            "hub's config or EDGE_HUB_NOTIFY__SMTP_HOST"
        )


__all__ = [
    "KINDS",
    "SIGNATURE_HEADER",
    "DeliveryError",
    "Notifier",
    "add_rule",
    "enqueue_for_alerts",
    "get_rule",
    "list_notifications",
    "list_rules",
    "payload_for",
    "remove_rule",
    "send_email",
    "send_test",
    "send_webhook",
    "sign",
]
