"""The mixed workload of bench/load.py, for locust (headless).

Journalists sign in, send requests (five steps, a small evidence file),
follow their cases and check in at their vaults; caseworkers browse their
queue and case pages and take and triage new requests (the journalists'
ones among them); supervisors read the deadline overview, the queue and the
report; donors open the report. Who is who, and the staff's sessions (made
beforehand: a TOTP code is good once), come from the JSON file named by
LOAD_PEOPLE. Every request is timed here, exactly, under a kind name; what
the app acknowledged (sent requests, check-ins, triages) is written with the
timings to LOAD_RESULTS when locust quits, for bench/load.py to check.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
from collections import defaultdict
from datetime import date, timedelta

from locust import HttpUser, between, events, task

PEOPLE = json.loads(open(os.environ["LOAD_PEOPLE"]).read())
# bench/load.py --without-reports: no donors, no report for supervisors (to measure the rest alone).
REPORTS = os.environ.get("LOAD_REPORTS", "1") == "1"
# Seconds a person spends on a page before the next request (bench/load.py --think).
THINK = tuple(float(x) for x in os.environ.get("LOAD_THINK", "1,4").split(","))
TOKEN_RE = re.compile(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"')
CASE_LINK_RE = re.compile(r'href="/cases/([0-9a-f]{32})"')
EVIDENCE_BYTES = 20 * 1024
BOUNDARY = "loadboundary5d1b"

timings: dict[str, list[float]] = defaultdict(list)
statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
accepted: dict[str, list] = {"requests": [], "check_ins": [], "triages": []}
_journalists = itertools.cycle(PEOPLE["journalists"])
_donors = itertools.cycle(PEOPLE["donors"])
_caseworkers = itertools.cycle(PEOPLE["caseworkers"])
_supervisors = itertools.cycle(PEOPLE["supervisors"])


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, exception=None, **_):
    timings[name].append(response_time)
    statuses[name][getattr(response, "status_code", 0) or 0] += 1


@events.quitting.add_listener
def _write(environment, **_):
    with open(os.environ["LOAD_RESULTS"], "w") as fh:
        json.dump({"timings": timings, "statuses": statuses, "accepted": accepted}, fh)


def _token(html: str) -> str:
    match = TOKEN_RE.search(html)
    return match.group(1) if match else ""


def _multipart(fields: dict, file: tuple[str, str, bytes]) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    name, filename, content = file
    parts.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 "Content-Type: image/jpeg\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Person(HttpUser):
    abstract = True

    def get(self, path: str, name: str, ok=(200,)):
        with self.client.get(path, name=name, allow_redirects=False, catch_response=True) as response:
            if response.status_code not in ok:
                response.failure(f"HTTP {response.status_code}")
            return response

    def post(self, path: str, name: str, data, ok=(302,), **kwargs):
        with self.client.post(path, data=data, name=name, allow_redirects=False, catch_response=True,
                              **kwargs) as response:
            if response.status_code not in ok:
                response.failure(f"HTTP {response.status_code}")
            return response

    def sign_in(self, email: str, password: str) -> None:
        token = _token(self.get("/login", "GET login").text)
        response = self.post("/login", "POST login", {"email": email, "password": password, "csrf_token": token})
        self.token = _token(self.get(response.headers.get("Location", "/"), "GET home").text) \
            if response.status_code == 302 else ""


class Journalist(Person):
    weight = 60
    wait_time = between(*THINK)

    def on_start(self):
        self.me = next(_journalists)
        self.sign_in(self.me["email"], self.me["password"])
        self.cases: list[str] = []

    @task(5)
    def follow(self):
        page = self.get("/my/requests", "GET my requests").text
        ids = re.findall(r'href="/requests/([0-9a-f]{32})"', page)
        if ids:
            self.get(f"/requests/{random.choice(ids)}", "GET request page")

    @task(2)
    def check_in(self):
        vault = self.me["vault"]
        self.get(f"/vault/{vault}/check-in", "GET check-in page")
        response = self.post(f"/vault/{vault}/check-in", "POST check-in",
                             {"csrf_token": self.token, "pin": self.me["pin"]}, ok=(200,))
        if response.status_code == 200 and 'id="checked-in"' in response.text:
            accepted["check_ins"].append([vault, time.time()])

    @task(1)
    def send_request(self):
        response = self.post("/requests/new", "POST new request", {"csrf_token": self.token})
        match = re.search(r"/requests/([0-9a-f]{32})/step/1", response.headers.get("Location", ""))
        if not match:
            return
        case = match.group(1)
        base = f"/requests/{case}/step"
        steps = [
            (1, {"name": "Periodista de prueba", "contact": "+52 55 0000 0000", "beneficiary_type": "journalist"}),
            (2, {"state_code": random.choice(["GRO", "VER", "TAMPS", "CHIH", "MICH"]), "journalism_kind": "print"}),
        ]
        for n, data in steps:
            if self.post(f"{base}/{n}", f"POST intake step {n}", {**data, "csrf_token": self.token}).status_code != 302:
                return
        incident = {"csrf_token": self.token, "occurred_on": (date.today() - timedelta(days=2)).isoformat(),
                    "kind": "threat", "aggressor": "unknown", "channel": "phone", "place": "Casa",
                    "narrative": "Me amenazaron por teléfono.", "action": "continue"}
        evidence = os.urandom(EVIDENCE_BYTES)
        response = self.post(f"{base}/3", "POST intake step 3 (with evidence)",
                             _multipart(incident, ("files", "foto.jpg", evidence)),
                             headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        if response.status_code != 302:
            return
        if self.post(f"{base}/4", "POST intake step 4", {"csrf_token": self.token, "action": "continue"}
                     ).status_code != 302:
            return
        response = self.post(f"{base}/5", "POST send request",
                             {"csrf_token": self.token, "danger": "no", "consent": "y"})
        if response.status_code == 302 and response.headers.get("Location", "").endswith(f"/requests/{case}"):
            accepted["requests"].append([case, len(evidence)])


class Staff(Person):
    abstract = True

    def on_start(self):
        session = next(self.sessions)
        self.client.cookies.set("protect_session", session["cookie"])
        self.token = session["token"]


class Caseworker(Staff):
    weight = 25
    wait_time = between(*THINK)
    sessions = _caseworkers

    @task(4)
    def queue(self):
        page = self.get("/queue", "GET queue").text
        self.mine = CASE_LINK_RE.findall(page)

    @task(4)
    def case_page(self):
        if getattr(self, "mine", None):
            self.get(f"/cases/{random.choice(self.mine)}", "GET case page")

    @task(1)
    def triage_new_request(self):
        waiting = CASE_LINK_RE.findall(self.get("/queue?stage=queue", "GET new requests").text)
        if not waiting:
            return
        case = random.choice(waiting)
        page = self.get(f"/cases/{case}", "GET case page").text
        version = re.search(r'name="assign-version" type="hidden" value="(\d+)"', page)
        if not version:
            return
        taken = self.post(f"/cases/{case}/assign", "POST take case",
                          {"csrf_token": self.token, "assign-version": version.group(1)}, ok=(302, 409, 422))
        if taken.status_code != 302:
            return  # another caseworker was first
        page = self.get(f"/cases/{case}", "GET case page").text
        version = re.search(r'name="triage-version" type="hidden" value="(\d+)"', page)
        if not version:
            return
        response = self.post(f"/cases/{case}/act/triage", "POST triage decision",
                             {"csrf_token": self.token, "triage-version": version.group(1),
                              "triage-decision": "ordinary"}, ok=(302, 409))
        if response.status_code == 302:
            accepted["triages"].append(case)


class Supervisor(Staff):
    weight = 5
    wait_time = between(*THINK)
    sessions = _supervisors

    @task(3)
    def overview(self):
        self.get("/overview", "GET deadline overview")

    @task(3)
    def queue(self):
        self.get("/queue", "GET queue")

    if REPORTS:
        @task(1)
        def report(self):
            self.get("/reports/", "GET report")


class Donor(Person):
    weight = 10 if REPORTS else 0
    wait_time = between(5 * THINK[0], 15 * THINK[0])  # reading the report takes a while

    def on_start(self):
        me = next(_donors)
        self.sign_in(me["email"], me["password"])

    @task
    def report(self):
        self.get("/reports/", "GET report")
