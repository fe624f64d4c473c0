"""The console's HTTP side: an aiohttp sub-application mounted at ``/console/`` on the API server.

The API's gate lets requests routed to this sub-application through (``consumer.api.ingest``), and
this module's own middleware signs people in instead: a session cookie (``session``) made by the
sign-in form or, when CONSOLE_TRUSTED_HEADER is set, by the reverse proxy's header. Every page but
the sign-in form needs a session, so ticket text is never shown to anyone signed out, and every POST
must carry the session's CSRF token. Pages are rendered on the server (jinja2, autoescaped); the one
script, on the record page, streams an explanation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pydantic import ValidationError

from consumer import __version__
from consumer.api.explain import Explainer, RecordAt
from consumer.api.ratelimit import RateLimiter, retry_after_header
from consumer.config import Settings
from consumer.console import overview
from consumer.console.decide import (
    PUBLISH_WITHIN_S,
    DecisionError,
    DoneMark,
    Verdict,
    chosen_labels,
    human_correction,
    human_route,
    human_routed_ticket,
    new_mark_id,
    record_key,
    retake_at,
)
from consumer.console.inbox import (
    AGES,
    ROUTED_LOW_CONFIDENCE,
    Filter,
    InboxItem,
    page_of,
    select,
    ticket_of,
)
from consumer.console.passwords import USER_NAME, check_user
from consumer.console.reader import ConsoleReader
from consumer.console.session import Session, csrf_ok, csrf_token, new_session, read_session, session_cookie
from consumer.metrics import Metrics
from consumer.taxonomy import Taxonomy
from producer_tools.replay import Position, parse_error_kinds, plan_replays
from schemas.codec import encode
from schemas.events import ErrorKind, RoutedTicket, SourcePosition, TicketEvent, TriageRecord

log = logging.getLogger("ticket_router.console")

PREFIX = "/console"
SESSION_COOKIE = "console_session"
SIGN_IN_COOKIE = "console_sign_in"
"""A random nonce set by the sign-in page: its form's CSRF token is bound to it."""
PAGE_SIZE = 25
DECIDE_TIMEOUT_S = 10.0
REPLAY_MAX = 500
"""Records one replay sends at most: each is read back by position first."""
SIGN_IN_RATE_PER_S = 1 / 6
SIGN_IN_BURST = 5
"""Five tries at once, then one every six seconds, per client address and per user name."""
MAX_LIMITED_KEYS = 10_000
PERSON_RATE_PER_S = 5.0
PERSON_BURST = 60
"""Pages and actions per signed-in person: far above what a person clicks, a bound on a script
with a stolen session (every request may read topics or call the model)."""
RAW_CHARS = 4_000
CATEGORIES: tuple[str, ...] = (*(kind.value for kind in ErrorKind), ROUTED_LOW_CONFIDENCE)
SESSION = web.RequestKey("console_session", Session)
CSP_NONCE = web.RequestKey("console_csp_nonce", str)

Publish = Callable[[str, bytes, bytes | None, Sequence[tuple[str, bytes]]], Awaitable[None]]
"""(topic, value, key, headers) → once the broker acknowledged the record."""
Fetch = Callable[[RecordAt], Awaitable[bytes | None]]


@dataclass(frozen=True)
class ConsoleConfig:
    users: Mapping[str, str]
    trusted_header: str | None
    session_key: bytes
    session_ttl_s: float
    cookie_secure: bool
    triage_topic: str
    input_topic: str
    corrections_topic: str
    decisions_topic: str
    queue_topic_prefix: str
    prompt_version: str

    @classmethod
    def from_settings(cls, settings: Settings, prompt_version: str) -> ConsoleConfig:
        key = settings.console_session_key
        return cls(
            users=settings.console_users,
            trusted_header=settings.console_trusted_header,
            session_key=key.get_secret_value().encode() if key is not None else secrets.token_bytes(32),
            session_ttl_s=settings.console_session_ttl_s,
            cookie_secure=settings.console_cookie_secure,
            triage_topic=settings.triage_topic,
            input_topic=settings.input_topic,
            corrections_topic=settings.corrections_topic,
            decisions_topic=settings.console_decisions_topic,
            queue_topic_prefix=settings.queue_topic_prefix,
            prompt_version=prompt_version,
        )


@dataclass(frozen=True)
class Loaded:
    """A record read back by position: the ticket (when readable), where it came from, its raw text."""

    ticket: TicketEvent | None
    source: SourcePosition | None
    raw: str
    routed_queue: str | None


def load_record(value: bytes, category: str) -> Loaded:
    """The ticket a triage or queue record holds. Pure."""
    raw = value[:RAW_CHARS].decode("utf-8", "replace")
    try:
        if category == ROUTED_LOW_CONFIDENCE:
            routed = RoutedTicket.model_validate_json(value)
            return Loaded(routed.ticket, routed.source, raw, routed.queue)
        triage = TriageRecord.model_validate_json(value)
    except ValidationError:
        return Loaded(None, None, raw, None)
    return Loaded(ticket_of(triage), triage.source, triage.original_value[:RAW_CHARS], None)


def parse_filter(query: Mapping[str, str], kinds: Sequence[str]) -> Filter:
    """The inbox filter from a query; a value outside the choices is a 400 naming the field."""
    unknown = [kind for kind in kinds if kind not in CATEGORIES]
    if unknown:
        raise FormError(f"kind: unknown {unknown[0]!r} (allowed: {', '.join(CATEGORIES)})")
    age = query.get("age", "any") or "any"
    if age not in AGES:
        raise FormError(f"age: unknown {age!r} (allowed: {', '.join(AGES)})")
    return Filter(frozenset(kinds), age, query.get("decided") == "1")


@dataclass(frozen=True)
class Decided:
    """How a decision ended: ``outcome`` (the ``console_decisions`` label) and what to tell the person.

    ``routed``/``confirmed``: published and read back; ``pending``: published, its mark not read
    back in time (not a failure: nothing is to be retried); ``lost``: another decision came first,
    nothing published; ``failed``: nothing published, retry."""

    outcome: str
    text: str = ""


def pending_text(queue: str | None) -> str:
    """What a person is told when a decision was published but its mark not read back yet. Pure."""
    where = f"The ticket was routed to {queue} and the correction" if queue else "The correction was"
    return (
        f"{where} published. This console has not read the decision's mark back yet, so the record "
        "may still show as undecided for a moment; do not decide it again."
    )


def already_decided(mark: DoneMark) -> Decided:
    return Decided("lost", f"Already decided by {mark.actor} (queue {mark.queue}); nothing was published.")


def clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S UTC")


class FormError(ValueError):
    """A query or form value outside its choices: a 400 page naming the field."""


@dataclass
class Console:
    config: ConsoleConfig
    taxonomy: Taxonomy
    reader: ConsoleReader
    fetch: Fetch
    publish: Publish
    metrics: Metrics
    explainer: Explainer | None = None
    sampler: overview.RateSampler = field(default_factory=overview.RateSampler)
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(SIGN_IN_RATE_PER_S, SIGN_IN_BURST))
    person_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(PERSON_RATE_PER_S, PERSON_BURST))
    templates: Environment = field(
        default_factory=lambda: Environment(
            loader=PackageLoader("consumer.console", "templates"), autoescape=select_autoescape(default=True)
        )
    )

    # -- pages ------------------------------------------------------------------------------------

    def render(self, request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
        session = request.get(SESSION)
        nonce = secrets.token_urlsafe(12)
        request[CSP_NONCE] = nonce
        text = self.templates.get_template(name).render(
            user=session.user if session else None,
            csrf=csrf_token(session.nonce, self.config.session_key) if session else "",
            csp_nonce=nonce,
            prefix=PREFIX,
            **context,
        )
        return web.Response(text=text, status=status, content_type="text/html")

    def message(
        self, request: web.Request, status: int, title: str, text: str, notice: bool = False
    ) -> web.Response:
        return self.render(request, "message.html", status, title=title, text=text, notice=notice)

    async def sign_in_page(self, request: web.Request, status: int = 200, problem: str = "") -> web.Response:
        nonce = secrets.token_urlsafe(16)
        response = self.render(
            request,
            "sign_in.html",
            status,
            sign_in_csrf=csrf_token(nonce, self.config.session_key),
            problem=problem,
            passwords=bool(self.config.users),
            header=self.config.trusted_header,
        )
        self.set_cookie(response, SIGN_IN_COOKIE, nonce, 3_600)
        return response

    async def get_sign_in(self, request: web.Request) -> web.Response:
        return await self.sign_in_page(request)

    async def post_sign_in(self, request: web.Request) -> web.Response:
        form = await request.post()
        if not csrf_ok(request.cookies.get(SIGN_IN_COOKIE), form.get("csrf"), self.config.session_key):
            return await self.sign_in_page(request, 403, "The sign-in form expired; please sign in again.")
        name = str(form.get("user", ""))[:64]
        password = str(form.get("password", ""))
        if not self.sign_in_allowed(request.remote or "?", name):
            self.metrics.child(self.metrics.console_sign_ins, "rate_limited").inc()
            response = await self.sign_in_page(
                request, 429, "Too many attempts; wait a minute and try again."
            )
            response.headers["Retry-After"] = "60"
            return response
        if not await asyncio.to_thread(check_user, dict(self.config.users), name, password):
            self.metrics.child(self.metrics.console_sign_ins, "refused").inc()
            log.warning("console sign-in refused", extra={"actor": name, "remote": request.remote})
            return await self.sign_in_page(request, 401, "Wrong user name or password.")
        self.metrics.child(self.metrics.console_sign_ins, "ok").inc()
        log.info("console sign-in", extra={"actor": name, "remote": request.remote})
        response = see_other(f"{PREFIX}/")
        session = new_session(name, time.time(), self.config.session_ttl_s)
        self.set_session(response, session)
        response.del_cookie(SIGN_IN_COOKIE, path=PREFIX)
        return response

    def sign_in_allowed(self, remote: str, name: str) -> bool:
        if len(self.limiter._buckets) > MAX_LIMITED_KEYS:  # addresses are unbounded: start afresh
            self.limiter = RateLimiter(SIGN_IN_RATE_PER_S, SIGN_IN_BURST)
        now = time.monotonic()
        by_address = self.limiter.take(f"address:{remote}", now)
        by_name = self.limiter.take(f"user:{name}", now)
        return by_address == 0 and by_name == 0

    async def post_sign_out(self, request: web.Request) -> web.Response:
        response = see_other(f"{PREFIX}/sign-in")
        response.del_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    async def get_inbox(self, request: web.Request) -> web.Response:
        try:
            wanted = parse_filter(request.query, request.query.getall("kind", []))
            number = int(request.query.get("page", "1") or "1")
        except (FormError, ValueError) as exc:
            return self.message(request, 400, "Bad filter", str(exc))
        chosen = select(self.reader.inbox.items(), wanted, datetime.now(UTC), self.reader.done)
        shown, pages = page_of(chosen, number, PAGE_SIZE)
        return self.render(
            request,
            "inbox.html",
            items=shown,
            matching=len(chosen),
            page=min(max(1, number), pages),
            pages=pages,
            wanted=wanted,
            categories=CATEGORIES,
            ages=list(AGES),
            done=self.reader.done,
            caught_up=self.reader.caught_up.is_set(),
            query=request.query_string,
            replayable=[item for item in chosen if item.category != ROUTED_LOW_CONFIDENCE],
        )

    def item_of(self, request: web.Request) -> InboxItem | None:
        info = request.match_info
        try:
            key = record_key(info["topic"], int(info["partition"]), int(info["offset"]))
        except ValueError:
            return None
        return self.reader.inbox.get(key)

    async def get_record(self, request: web.Request) -> web.Response:
        item = self.item_of(request)
        if item is None:
            return self.message(request, 404, "Not in the inbox", "No such record in the inbox.")
        return await self.record_page(request, item)

    async def record_page(
        self, request: web.Request, item: InboxItem, status: int = 200, problem: str = ""
    ) -> web.Response:
        value = await self.fetch(RecordAt(item.topic, item.partition, item.offset))
        loaded = load_record(value, item.category) if value is not None else Loaded(None, None, "", None)
        guesses = {axis.name: axis.label for axis in item.axes}
        mark = self.reader.done.get(item.key)
        return self.render(
            request,
            "record.html",
            status,
            item=item,
            loaded=loaded,
            mark=mark,
            claimed_at=clock(mark.at) if mark else "",
            retake_at=clock(retake_at(mark)) if mark else "",
            axes=self.taxonomy.axes,
            guesses=guesses,
            thresholds=self.taxonomy.thresholds(),
            problem=problem,
            explainable=self.explainer is not None,
        )

    # -- deciding ---------------------------------------------------------------------------------

    async def post_decide(self, request: web.Request) -> web.Response:
        item = self.item_of(request)
        if item is None:
            return self.message(request, 404, "Not in the inbox", "No such record in the inbox.")
        form = await request.post()
        try:
            labels = chosen_labels(form, self.taxonomy)
        except DecisionError as exc:
            return await self.record_page(request, item, 400, str(exc))
        value = await self.fetch(RecordAt(item.topic, item.partition, item.offset))
        loaded = load_record(value, item.category) if value is not None else None
        if loaded is None or loaded.ticket is None or loaded.source is None:
            return await self.record_page(request, item, 422, "This record holds no ticket to route.")
        decided = await self.decide(item, loaded, labels, request[SESSION].user)
        self.metrics.child(self.metrics.console_decisions, decided.outcome).inc()
        if decided.outcome in ("routed", "confirmed"):
            return see_other(f"{PREFIX}/record/{item.topic}/{item.partition}/{item.offset}")
        if decided.outcome == "pending":
            return self.message(request, 202, "Published; confirmation pending", decided.text, notice=True)
        status = 503 if decided.outcome == "failed" else 409
        return await self.record_page(request, item, status, decided.text)

    async def decide(self, item: InboxItem, loaded: Loaded, labels: dict[str, str], actor: str) -> Decided:
        """Claim the record, and publish only if this claim wins (see ``consumer.console.decide``)."""
        assert loaded.ticket is not None and loaded.source is not None
        ticket = loaded.ticket
        decision = human_route(self.taxonomy, labels)
        started = time.monotonic()
        claim = DoneMark(
            record=item.key,
            state="claimed",
            mark_id=new_mark_id(),
            actor=actor,
            labels=labels,
            queue=decision.queue,
            at=datetime.now(UTC),
        )
        try:
            verdict = await self.claim(claim)
            if not verdict.won:
                return await self.lost(verdict)
            if verdict.superseded is not None:
                earlier = await self.routed_earlier(claim, ticket.event_id)
                if earlier is not None:
                    return earlier
        except TimeoutError:
            return Decided("failed", "The decision could not be confirmed; nothing was published. Retry.")
        if time.monotonic() - started > PUBLISH_WITHIN_S:  # the claim may be taken over by now
            return Decided("failed", "Claiming took too long; nothing was published. Retry.")
        moved = loaded.routed_queue != decision.queue
        now = datetime.now(UTC)
        if moved:
            routed = human_routed_ticket(
                ticket, labels, decision, actor, loaded.source, (self.config.prompt_version, __version__), now
            )
            topic = self.config.queue_topic_prefix + decision.queue
            await self.publish(topic, encode(routed), ticket.ticket_id.encode(), [])
        correction = human_correction(ticket, labels, actor, now)
        await self.publish(self.config.corrections_topic, encode(correction), ticket.ticket_id.encode(), [])
        log.info(
            "console decision: %s to %s",
            ticket.ticket_id,
            decision.queue,
            extra={"actor": actor, "record": item.key, "queue": decision.queue, "labels": labels},
        )
        published = claim.model_copy(update={"state": "published", "at": datetime.now(UTC)})
        if not await self.confirm(published):
            return Decided("pending", pending_text(decision.queue if moved else None))
        return Decided("routed" if moved else "confirmed")

    async def lost(self, verdict: Verdict) -> Decided:
        """Another mark came first: repair the compacted state if needed, and say whose it is."""
        if verdict.repair is not None:
            await self.send_mark(verdict.repair)
        winner = verdict.current
        if winner.state == "published":
            return already_decided(winner)
        return Decided(
            "lost",
            f"Claimed by {winner.actor} (queue {winner.queue}) at {clock(winner.at)}, not confirmed yet; "
            f"nothing was published. If still unconfirmed at {clock(retake_at(winner))}, "
            "it can be decided again.",
        )

    async def routed_earlier(self, claim: DoneMark, event_id: str) -> Decided | None:
        """After taking over a stale claim: a route a person already published for this ticket, recorded
        as the record's published mark (nothing published again), or None when there is none."""
        await asyncio.wait_for(self.reader.read_queues_through(time.time() * 1000), DECIDE_TIMEOUT_S)
        current = self.reader.done.get(claim.record)
        if current is not None and current.state == "published":  # a late confirmation settled it
            return already_decided(current)
        earlier = self.reader.human_routed.get(event_id)
        if earlier is None:
            return None
        mark = claim.model_copy(
            update={
                "state": "published",
                "actor": earlier.actor,
                "labels": earlier.labels,
                "queue": earlier.queue,
                "at": datetime.now(UTC),
            }
        )
        log.warning(
            "console: a stale claim had routed the ticket before stopping; recorded, not published again",
            extra={"actor": claim.actor, "record": claim.record, "queue": earlier.queue},
        )
        await self.confirm(mark)
        return Decided(
            "lost",
            f"Already routed to {earlier.queue} by {earlier.actor}, whose confirmation was lost; "
            "recorded as decided now, nothing was published again.",
        )

    async def confirm(self, published: DoneMark) -> bool:
        """Send a published mark; whether this replica read it back within DECIDE_TIMEOUT_S."""
        await self.send_mark(published)
        try:
            await asyncio.wait_for(
                self.reader.wait_until(lambda: self.published(published.record)), DECIDE_TIMEOUT_S
            )
        except TimeoutError:
            log.warning(
                "console: a published mark was not read back in time", extra={"record": published.record}
            )
            return False
        return True

    async def claim(self, claim: DoneMark) -> Verdict:
        """Produce the claim and wait until this replica's reader folds it."""
        future = self.reader.expect(claim.mark_id)
        try:
            await self.send_mark(claim)
            return await asyncio.wait_for(future, DECIDE_TIMEOUT_S)
        finally:
            self.reader.forget(claim.mark_id)

    def published(self, key: str) -> bool:
        """Whether this replica's reader has folded a published mark of the record: the page the
        decider is sent to next then shows the decision."""
        mark = self.reader.done.get(key)
        return mark is not None and mark.state == "published"

    async def send_mark(self, mark: DoneMark) -> None:
        await self.publish(self.config.decisions_topic, encode(mark), mark.record.encode(), [])

    # -- explaining, replaying, the overview ------------------------------------------------------

    async def get_explain(self, request: web.Request) -> web.StreamResponse:
        if self.explainer is None:
            return web.json_response({"error": "explanations are not available on this router"}, status=503)
        return await self.explainer.handle(request)

    async def post_replay(self, request: web.Request) -> web.Response:
        form = await request.post()
        kinds = [str(kind) for kind in form.getall("kind", [])]
        try:
            wanted = parse_filter({"age": str(form.get("age", "any"))}, kinds)
            error_kinds = parse_error_kinds([k for k in kinds if k != ROUTED_LOW_CONFIDENCE])
        except (FormError, ValueError) as exc:
            return self.message(request, 400, "Bad filter", str(exc))
        chosen = [
            item
            for item in select(self.reader.inbox.items(), wanted, datetime.now(UTC), self.reader.done)
            if item.category != ROUTED_LOW_CONFIDENCE and item.category in error_kinds
        ][:REPLAY_MAX]
        records = [
            (
                Position(item.topic, item.partition, item.offset),
                await self.fetch(RecordAt(item.topic, item.partition, item.offset)),
            )
            for item in chosen
        ]
        plan = plan_replays(records, error_kinds, lambda: datetime.now(UTC), lambda: str(uuid.uuid4()))
        actor = request[SESSION].user
        for replay in plan.replays:
            await self.publish(self.config.input_topic, replay.value, replay.key, replay.headers)
            triage = replay.triage
            await self.send_mark(
                DoneMark(
                    record=record_key(triage.topic, triage.partition, triage.offset),
                    state="published",
                    mark_id=new_mark_id(),
                    actor=actor,
                    labels={},
                    queue=f"replayed to {self.config.input_topic}",
                    at=datetime.now(UTC),
                )
            )
        log.info("console replay: %d records", len(plan.replays), extra={"actor": actor})
        return self.render(request, "replayed.html", plan=plan, topic=self.config.input_topic)

    async def get_overview(self, request: web.Request) -> web.Response:
        figures = overview.figures(self.metrics)
        self.sampler.sample(time.monotonic(), figures.routed_by_queue)
        rates = self.sampler.per_minute()
        queues = sorted(figures.routed_by_queue.items(), key=lambda row: -row[1])
        on_topics = sorted(
            (
                (topic.removeprefix(self.config.queue_topic_prefix), float(count))
                for topic, count in self.reader.records_on.items()
                if topic not in (self.config.triage_topic, self.config.decisions_topic)
            ),
            key=lambda row: -row[1],
        )
        shares = sorted(overview.share(figures.decided_by).items(), key=lambda row: -row[1])
        charts = {
            "routed": Markup(overview.bar_chart(queues, "Tickets routed per queue by this replica")),
            "records": Markup(overview.bar_chart(on_topics, "Records on each queue topic")),
            "rates": Markup(overview.bar_chart(sorted(rates.items()), "Tickets per minute", "/min")),
            "shares": Markup(overview.bar_chart(shares, "Share decided by each tier and by people", "%")),
        }
        return self.render(request, "overview.html", figures=figures, charts=charts, rates=rates)

    # -- sessions ---------------------------------------------------------------------------------

    def set_cookie(self, response: web.StreamResponse, name: str, value: str, max_age: float) -> None:
        response.set_cookie(
            name,
            value,
            max_age=int(max_age),
            path=PREFIX,
            httponly=True,
            samesite="Strict",
            secure=self.config.cookie_secure,
        )

    def set_session(self, response: web.StreamResponse, session: Session) -> None:
        self.set_cookie(
            response,
            SESSION_COOKIE,
            session_cookie(session, self.config.session_key),
            self.config.session_ttl_s,
        )

    def session_of(self, request: web.Request) -> tuple[Session | None, bool]:
        """The request's session and whether it is new (made from the trusted proxy header)."""
        now = time.time()
        session = read_session(request.cookies.get(SESSION_COOKIE), self.config.session_key, now)
        header = self.config.trusted_header
        if header is None:
            return session, False
        proxied = request.headers.get(header, "").strip()
        if not USER_NAME.match(proxied):
            return session if session is not None and self.config.users else None, False
        if session is not None and session.user == proxied:
            return session, False
        return new_session(proxied, now, self.config.session_ttl_s), True

    @web.middleware
    async def guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Sign-in for every page but the sign-in form; the CSRF token on every POST."""
        if request.match_info.route.name in ("sign_in", "sign_in_post"):
            return secured(await handler(request), request)
        session, issued = self.session_of(request)
        if session is None:
            if request.match_info.route.name == "explain":  # the page's script shows a JSON error
                return secured(web.json_response({"error": "signed out: sign in again"}, status=401), request)
            if request.method == "GET":
                return secured(see_other(f"{PREFIX}/sign-in"), request)
            return secured(self.message(request, 401, "Signed out", "Sign in first."), request)
        request[SESSION] = session
        wait_s = self.person_limiter.take(session.user, time.monotonic())
        if wait_s > 0:
            refused = self.message(request, 429, "Slow down", "Too many requests; retry in a few seconds.")
            refused.headers["Retry-After"] = retry_after_header(wait_s)
            return secured(refused, request)
        if request.method == "POST":
            form = await request.post()
            if not csrf_ok(session.nonce, form.get("csrf"), self.config.session_key):
                log.warning("console: POST without a valid CSRF token refused", extra={"actor": session.user})
                return secured(
                    self.message(request, 403, "Refused", "The form's token is missing or stale; reload."),
                    request,
                )
        response = await handler(request)
        if issued:
            self.set_session(response, session)
        return secured(response, request)

    def app(self) -> web.Application:
        sub = web.Application(middlewares=[self.guard])
        sub.router.add_get("/", self.get_inbox, name="inbox")
        sub.router.add_get("/sign-in", self.get_sign_in, name="sign_in")
        sub.router.add_post("/sign-in", self.post_sign_in, name="sign_in_post")
        sub.router.add_post("/sign-out", self.post_sign_out, name="sign_out")
        sub.router.add_get("/record/{topic}/{partition:\\d+}/{offset:\\d+}", self.get_record, name="record")
        sub.router.add_post("/record/{topic}/{partition:\\d+}/{offset:\\d+}/decide", self.post_decide)
        sub.router.add_get("/explain", self.get_explain, name="explain")
        sub.router.add_post("/replay", self.post_replay, name="replay")
        sub.router.add_get("/overview", self.get_overview, name="overview")
        return sub


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def secured(response: web.StreamResponse, request: web.Request) -> web.StreamResponse:
    """Headers every console answer carries: not cached, not framed, scripts only with the nonce."""
    if response.prepared:  # a stream (the explanation) already sent its headers
        return response
    nonce = request.get(CSP_NONCE, "none")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"
    )
    return response


def kafka_publish(producer: Any) -> Publish:
    """``Publish`` over an aiokafka producer (the service's acks=all producer)."""

    async def publish(
        topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        await producer.send_and_wait(topic, value, key=key, headers=list(headers) or None)

    return publish
