"""The OpenAI Batch API behind ``OpenAIVLM.generate`` (``teacher.openai.batch.enabled``).

One ``generate`` call (``teacher.batch_size`` requests of PA or PI) becomes one batch job — several
when the requests exceed the API's limits (50,000 requests or ``max_bytes_per_batch`` per input
file): the requests are written as JSONL (``custom_id`` = their position), uploaded with
``purpose=batch``, submitted with ``completion_window=24h``, polled with growing, bounded
intervals, and the answers downloaded and put back in request order by ``custom_id``. Cost is
counted at ``openai.batch.price_factor`` (OpenAI: half the list price).

Nothing is paid twice after a crash: the state of each call — input file id, then batch id —
is written (atomically) to ``<state dir>/<digest of the requests>.json`` before the next step,
so a re-run of the stage, which asks for the same requests, finds the batch and waits for it
instead of submitting another. A crash between creating a batch and writing its id is covered
too (or the state lost with a pod's disk): before uploading, the 100 most recent batches are listed
and one made from the job's input file or tagged (metadata) with the same digest and part is
adopted. Requests that come back with a transient error (429, 5xx) or unanswered when the 24 h
window expired are submitted again, up to ``openai.max_retries`` rounds; any other error stops
the stage with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import openai

from mpa.errors import one_line
from mpa.records import write_json_atomic
from mpa.redact import redact_text

if TYPE_CHECKING:
    from mpa.vlm.openai_backend import OpenAIVLM

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
T = TypeVar("T")


def run_batch(vlm: OpenAIVLM, bodies: list[dict]) -> list[dict]:
    """Answer chat-completion ``bodies`` through the Batch API; the response bodies, in order."""
    return BatchCall(vlm, bodies).run()


class BatchCall:
    """One ``generate`` call's batch jobs and their persisted state."""

    def __init__(self, vlm: OpenAIVLM, bodies: list[dict]) -> None:
        self.vlm = vlm
        self.error = vlm.request_error
        self.s = vlm.settings.batch
        self.where = redact_text(vlm.settings.base_url)
        # management calls (upload, create, poll, download) are few: the SDK's own retries are enough for them
        self.client = vlm.client.with_options(max_retries=vlm.settings.max_retries)
        self.lines = {f"req-{i}": json.dumps({"custom_id": f"req-{i}", "method": "POST", "url": ENDPOINT,
                                              "body": body}, sort_keys=True, separators=(",", ":"))
                      for i, body in enumerate(bodies)}
        digest = hashlib.sha256()
        digest.update(vlm.settings.base_url.encode())
        for line in self.lines.values():
            digest.update(line.encode())
            digest.update(b"\n")
        self.key = digest.hexdigest()[:32]
        if vlm.batch_dir is None:
            raise self.error("openai.batch needs a directory to keep batch ids in (so a re-run resumes them): run "
                             "it through a stage, or set teacher.openai.batch.state_dir")
        self.path = Path(vlm.batch_dir) / f"{self.key}.json"

    # -- state --------------------------------------------------------------------------------
    def _load(self) -> dict:
        if self.path.is_file():
            try:
                state = json.loads(self.path.read_text(encoding="utf-8"))
                if isinstance(state, dict) and state.get("key") == self.key and isinstance(state.get("jobs"), list):
                    return state
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                pass
            raise self.error(f"batch state {self.path} is unreadable; look up its batch on the provider's dashboard "
                             "(cancel it if it is running), then delete the file to submit anew")
        return {"key": self.key, "n": len(self.lines), "jobs": []}

    def _save(self, state: dict) -> None:
        write_json_atomic(self.path, state)

    def _chunks(self, ids: list[str]) -> list[list[str]]:
        chunks: list[list[str]] = [[]]
        size = 0
        for cid in ids:
            n = len(self.lines[cid]) + 1
            full = len(chunks[-1]) >= self.s.max_requests_per_batch or size + n > self.s.max_bytes_per_batch
            if chunks[-1] and full:
                chunks.append([])
                size = 0
            chunks[-1].append(cid)
            size += n
        return chunks

    # -- API calls ----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except openai.APIStatusError as exc:
            detail = one_line(redact_text(exc.response.text), 300) or "no body"
            raise self.error(f"{self.where}: {what} failed (HTTP {exc.status_code}: {detail}); the endpoint must "
                             f"offer the Batch API (/v1/files, /v1/batches) — or set teacher.openai.batch.enabled: "
                             f"false; state: {self.path}") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            why = one_line(redact_text(f"{type(cause).__name__}: {cause}"), 200)
            raise self.error(f"{self.where}: {what} failed ({why}); re-running resumes (state: {self.path})") from None

    def _tag(self, job: dict) -> dict[str, str]:
        """The batch's metadata: which requests (digest) and which part of which round it answers."""
        return {"mpa_key": self.key, "mpa_part": f"{job['round']}/{job['part']}"}

    def _find(self, job: dict) -> str | None:
        """A batch already made for this job (its id not written before a crash, or the state lost with a pod's
        disk): made from the job's input file, or tagged with the job's digest and part; never a failed or
        cancelled one (deleting the state file is how a user asks for a new batch)."""
        found = self._call("listing batches", lambda: self.client.batches.list(limit=100))
        tag = self._tag(job)
        for b in found.data:
            same_file = job.get("input_file_id") and b.input_file_id == job["input_file_id"]
            same_tag = all((b.metadata or {}).get(k) == v for k, v in tag.items())
            if (same_file or same_tag) and b.status not in ("failed", "cancelled"):
                return b.id
        return None

    def _submit(self, job: dict, state: dict) -> None:
        if job.get("batch_id"):
            return
        found = self._find(job)
        if found:  # never pay twice
            job["batch_id"] = found
            self._save(state)
            log.info("batch %s (made before a restart) resumed", found)
            return
        if not job.get("input_file_id"):
            data = ("\n".join(self.lines[c] for c in job["custom_ids"]) + "\n").encode("utf-8")
            name = f"mpa-{self.key[:12]}-{job['round']}-{job['part']}.jsonl"
            f = self._call("uploading the batch input",
                           lambda: self.client.files.create(file=(name, data, "application/jsonl"), purpose="batch"))
            job["input_file_id"] = f.id
            self._save(state)
        b = self._call("creating the batch", lambda: self.client.batches.create(
            input_file_id=job["input_file_id"], endpoint=ENDPOINT, completion_window="24h", metadata=self._tag(job)))
        job["batch_id"] = b.id
        self._save(state)
        log.info("batch %s submitted: %d requests (ids kept in %s)", b.id, len(job["custom_ids"]), self.path)

    def _wait(self, jobs: list[dict]) -> dict[str, Any]:
        delay, waited = self.s.poll_interval_s, 0.0
        while True:
            got = {j["batch_id"]: self._call(f"checking batch {j['batch_id']}",
                                             lambda j=j: self.client.batches.retrieve(j["batch_id"])) for j in jobs}
            if all(b.status in TERMINAL for b in got.values()):
                return got
            done = sum((b.request_counts.completed + b.request_counts.failed) if b.request_counts else 0
                       for b in got.values())
            states = ", ".join(f"{i} {b.status}" for i, b in got.items())
            if waited >= self.s.max_wait_s:
                raise self.error(f"batch {states} after waiting {waited:.0f} s (openai.batch.max_wait_s); it keeps "
                                 f"running on the server — re-run the stage to resume it (ids in {self.path})")
            log.info("batch %s: %d/%d answered; next check in %.0f s", states,
                     done, sum(len(j["custom_ids"]) for j in jobs), delay)
            self.vlm._sleep(delay)
            waited += delay
            delay = min(delay * 1.5, self.s.poll_max_interval_s)

    def _lines_of(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._call(f"downloading {file_id}", lambda: self.client.files.content(file_id)).text
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise self.error(f"{self.where}: batch file {file_id} holds a line that is not JSON "
                                     f"({one_line(redact_text(line), 80)!r})") from None
        return out

    def _collect(self, job: dict, batch: Any) -> tuple[dict[str, dict], dict[str, tuple[int, str]]]:
        bid = job["batch_id"]
        if batch.status == "failed":
            errs = "; ".join(one_line(redact_text(f"{e.code}: {e.message}"), 200)
                             for e in ((batch.errors.data if batch.errors else None) or [])[:3]) or "no reason given"
            raise self.error(f"{self.where}: batch {bid} failed ({errs}); fix the cause, then delete {self.path} to "
                             "submit anew")
        if batch.status == "cancelled":
            raise self.error(f"{self.where}: batch {bid} was cancelled; delete {self.path} to submit anew")
        ok: dict[str, dict] = {}
        bad: dict[str, tuple[int, str]] = {}
        wanted = set(job["custom_ids"])
        for rec in self._lines_of(batch.output_file_id) + self._lines_of(batch.error_file_id):
            cid = rec.get("custom_id")
            if cid not in wanted:
                continue
            resp = rec.get("response") or {}
            body = resp.get("body")
            code = int(resp.get("status_code") or 0)
            if code == 200 and isinstance(body, dict):
                ok[cid] = body
                bad.pop(cid, None)
            elif cid not in ok:
                err = rec.get("error") or (body.get("error") if isinstance(body, dict) else None) or body or "no body"
                bad[cid] = (code, one_line(redact_text(json.dumps(err) if not isinstance(err, str) else err), 300))
        for cid in wanted - ok.keys() - bad.keys():  # not answered within the 24 h window
            bad[cid] = (0, f"not answered before batch {bid} ended ({batch.status})")
        return ok, bad

    # -- the whole call -----------------------------------------------------------------------
    def run(self) -> list[dict]:
        RETRY_STATUS = self.vlm.retry_status  # noqa: N806 - the backend's constant

        state = self._load()
        if not state["jobs"]:
            state["jobs"] = [{"round": 0, "part": i, "custom_ids": ids}
                             for i, ids in enumerate(self._chunks(list(self.lines)))]
            self._save(state)
        answers: dict[str, dict] = {}
        rnd = 0
        while True:
            jobs = [j for j in state["jobs"] if j["round"] == rnd]
            for job in jobs:
                self._submit(job, state)
            batches = self._wait(jobs)
            failed: dict[str, tuple[int, str]] = {}
            for job in jobs:
                ok, bad = self._collect(job, batches[job["batch_id"]])
                answers.update(ok)
                failed.update(bad)
            hard = {c: e for c, e in failed.items() if e[0] and e[0] not in RETRY_STATUS}
            if hard:
                cid, (code, msg) = next(iter(hard.items()))
                with self.vlm._lock:
                    self.vlm.usage.failures += len(hard)
                raise self.vlm.refused(code, f"{len(hard)} of {len(self.lines)} batch requests, e.g. {cid}: {msg}")
            if not failed:
                break
            if rnd >= self.vlm.settings.max_retries:
                cid, (code, msg) = next(iter(failed.items()))
                with self.vlm._lock:
                    self.vlm.usage.failures += len(failed)
                raise self.error(f"{self.where}: {len(failed)} batch requests still unanswered after {rnd + 1} "
                                 f"batch rounds (last: {cid}: {msg}); raise teacher.openai.max_retries, or re-run "
                                 f"(state: {self.path})")
            rnd += 1
            with self.vlm._lock:
                self.vlm.usage.retries += len(failed)
            if not any(j["round"] == rnd for j in state["jobs"]):
                log.warning("%d batch requests come again in round %d (e.g. %s)", len(failed), rnd,
                            next(iter(failed.values()))[1])
                state["jobs"] += [{"round": rnd, "part": i, "custom_ids": ids}
                                  for i, ids in enumerate(self._chunks(sorted(failed, key=_order)))]
                self._save(state)
        for body in answers.values():
            self.vlm.account(body, 0.0, batch=True)
        return [answers[f"req-{i}"] for i in range(len(self.lines))]


def _order(cid: str) -> int:
    return int(cid.rsplit("-", 1)[1])
