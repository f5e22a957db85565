"""Schemathesis hooks for scripts/fuzz-api: the preconditions of this API that
no JSON Schema can state, made true for schema-valid (positive) requests, so that
the positive-data check can hold every operation to "valid input is accepted".

1. A list's `cursor` is only valid if that list handed it out as `next_cursor`.
   At import, this module makes the data each list needs for a second page
   (questions, answers, revisions, flags, moderation actions, a contest's
   candidates, rebuttals) through the API itself and keeps one real cursor per
   list (per sort for a city's questions); a positive case's cursor is replaced
   by the real one for its operation. Likewise a question's `contest_id` must
   be a contest of the question's city: a positive case gets the fixture
   contest of city 1, or none for another city.
   Garbage cursors are still sent by negative cases and are covered by the
   integration tests (forged, NUL-carrying, other-endpoint cursors).
2. An `Idempotency-Key` may be reused only for the same request (docs/api.md);
   the fuzzer reuses keys across different bodies. A positive case's key gets a
   suffix derived from its method, path and body, so equal keys mean equal
   requests, as the contract requires of clients.
3. The stateful phase follows links it infers from field names, also
   from a null field (a question's `contest_id`, an answer's `profile_id`), and
   would put the text `None` in the path, which is no id a client can send; such
   a path parameter gets an id that exists nowhere (0, or the nil UUID), so the
   request is answered 404 like any unknown id.

Loaded with SCHEMATHESIS_HOOKS=fuzz_hooks (PYTHONPATH=scripts); reads
FUZZ_BASE_URL and FUZZ_TOKEN (an admin's access token) from the environment.
"""

import hashlib
import json
import os
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["FUZZ_BASE_URL"].rstrip("/")
ADMIN = os.environ["FUZZ_TOKEN"]


def call(method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        raise SystemExit(f"fuzz_hooks: {method} {path} -> {e.code}: {e.read()[:300]!r}")
    return json.loads(text) if text else None


def account(name):
    """A new member's (id, access token)."""
    body = {"email": f"{name}@fuzz.example.com", "password": "fuzzing all day long",
            "display_name": name}
    created = call("POST", "/api/v1/auth/register", body=body)
    return created["user"]["id"], created["access_token"]


def candidate(name, contest):
    """A new candidate with a profile in `contest`: an access token."""
    user_id, _ = account(name)
    call("PUT", f"/api/v1/admin/users/{user_id}/role", ADMIN, {"role": "candidate"})
    call("POST", f"/api/v1/contests/{contest}/candidates", ADMIN,
         {"display_name": name, "user_id": user_id, "links": ["https://example.com/" + name]})
    login = {"email": f"{name}@fuzz.example.com", "password": "fuzzing all day long"}
    return call("POST", "/api/v1/auth/login", body=login)["access_token"]


def ballot():
    """An election of city 1 with one contest: the contest's id."""
    election = call("POST", "/api/v1/cities/1/elections", ADMIN,
                    {"name": "Fuzz fixture election", "election_date": "2031-11-04"})
    contest = call("POST", f"/api/v1/elections/{election['id']}/contests", ADMIN,
                   {"kind": "office", "title": "Fuzz fixture mayor", "seats": 1})
    return contest["id"]


CONTEST = ballot()


def ask(city, text):
    return call("POST", f"/api/v1/cities/{city}/questions", ADMIN, {"body": text})["question"]["id"]


def second_page(path):
    """The next_cursor of the first one-item page of `path`; every list here has two."""
    sep = "&" if "?" in path else "?"
    cursor = call("GET", f"{path}{sep}limit=1", ADMIN)["next_cursor"]
    if not cursor:
        raise SystemExit(f"fuzz_hooks: {path} has no second page to take a cursor from")
    return cursor


def harvest():
    asked = [ask(1, f"Fuzz fixture question {n}: when will the {thing} be repaired?")
             for n, thing in enumerate(["north bridge", "old library roof", "harbour lights",
                                        "market square fountain", "river path"])]
    # Two answers, one of them edited (two revisions), and two rebuttals of
    # the first (three candidates of one contest, so three profiles).
    first, second, third = (candidate(f"fuzz-candidate-{n}", CONTEST) for n in (1, 2, 3))
    answered = asked[0]
    rebutted = call("POST", f"/api/v1/questions/{answered}/answers", first, {"body": "Next spring."})
    answer = call("POST", f"/api/v1/questions/{answered}/answers", second, {"body": "Soon."})
    call("PUT", f"/api/v1/questions/{answered}/answers/mine", second, {"body": "In May."})
    for token in (second, third):
        call("POST", f"/api/v1/answers/{rebutted['id']}/rebuttals", token, {"body": "Too late."})
    # Two flagged questions for the queue, two removals for the log.
    for question in asked[1:3]:
        call("POST", f"/api/v1/questions/{question}/flags", ADMIN, {"reason": "fuzz"})
    for question in asked[3:5]:
        call("POST", f"/api/v1/questions/{question}/moderation", ADMIN,
             {"action": "remove", "reason": "fuzz fixture"})
    cursors = {
        "GET /api/v1/cities": second_page("/api/v1/cities"),
        "GET /api/v1/verbs": second_page("/api/v1/verbs"),
        "GET /api/v1/exercises": second_page("/api/v1/exercises"),
        "GET /api/v1/questions/popular": second_page("/api/v1/questions/popular"),
        "GET /api/v1/questions/{id}/answers": second_page(f"/api/v1/questions/{answered}/answers"),
        "GET /api/v1/questions/{id}/answers/{answer_id}/revisions": second_page(
            f"/api/v1/questions/{answered}/answers/{answer['id']}/revisions"),
        "GET /api/v1/moderation/questions": second_page("/api/v1/moderation/questions?status=flagged"),
        "GET /api/v1/moderation/log": second_page("/api/v1/moderation/log"),
        "GET /api/v1/contests/{id}/candidates": second_page(f"/api/v1/contests/{CONTEST}/candidates"),
        "GET /api/v1/answers/{id}/rebuttals": second_page(f"/api/v1/answers/{rebutted['id']}/rebuttals"),
    }
    for sort in ("top", "new", "hot"):
        cursors[f"GET /api/v1/cities/{{id}}/questions sort={sort}"] = second_page(
            f"/api/v1/cities/1/questions?sort={sort}")
    # Two leeches of the fuzzing account (8 wrong answers each) for a second page.
    for exercise in call("GET", "/api/v1/exercises?type=conjugation&limit=2", ADMIN)["items"]:
        for _ in range(8):
            call("POST", f"/api/v1/exercises/{exercise['id']}/attempts", ADMIN, {"answer": "zzz"})
    cursors["GET /api/v1/users/me/leeches"] = second_page("/api/v1/users/me/leeches")
    return cursors


CURSORS = harvest()


def is_positive(case):
    meta = getattr(case, "meta", None)
    generation = getattr(meta, "generation", None)
    mode = getattr(generation, "mode", None)
    return bool(mode is not None and mode.is_positive)


def real_cursor(case):
    label = f"{case.method.upper()} {case.path}"
    if label == "GET /api/v1/cities/{id}/questions":
        label += f" sort={(case.query or {}).get('sort') or 'hot'}"
    return CURSORS.get(label)


def real_contest(case):
    """A positive question's `contest_id`: the fixture contest in city 1, else none."""
    if (case.method.upper(), case.path) != ("POST", "/api/v1/cities/{id}/questions"):
        return
    if not isinstance(case.body, dict) or case.body.get("contest_id") is None:
        return
    if str((case.path_parameters or {}).get("id")) == "1":
        case.body["contest_id"] = CONTEST
    else:
        del case.body["contest_id"]


# Paths whose {id} is an integer (the other ids are UUIDs).
INTEGER_ID_PATHS = ("/api/v1/cities/", "/api/v1/elections/", "/api/v1/contests/")


def no_null_path_ids(case):
    params = case.path_parameters or {}
    for name, value in params.items():
        if value is None:
            params[name] = 0 if case.path.startswith(INTEGER_ID_PATHS) and name == "id" \
                else "00000000-0000-0000-0000-000000000000"


@schemathesis.hook
def map_case(context, case):
    no_null_path_ids(case)
    if not is_positive(case):
        return case
    real_contest(case)
    if case.query and isinstance(case.query.get("cursor"), str) and case.query["cursor"]:
        cursor = real_cursor(case)
        if cursor is None:
            raise RuntimeError(f"fuzz_hooks: no real cursor for {case.method} {case.path}")
        case.query["cursor"] = cursor
    if case.headers:
        for name in list(case.headers):
            if name.lower() == "idempotency-key" and isinstance(case.headers[name], str):
                body = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) else None
                request = json.dumps([case.method.upper(), case.formatted_path, body],
                                     sort_keys=True, default=str)
                suffix = hashlib.sha256(request.encode()).hexdigest()[:20]
                case.headers[name] = f"{case.headers[name][:230]}.{suffix}"
    return case
