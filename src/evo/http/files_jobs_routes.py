"""Fine-tuning as a service: `/v1/files` (uploads checked by ingest) and `/v1/fine_tuning/jobs`
(a job is a generation, run as a Ray job), each per key."""

import asyncio
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import Response

from evo.finetune.jobs import JOB_ID, public
from evo.http.state import ServerState, State, read_json
from evo.lineage.registry import SHARED, owner_of, visible
from evo.openai_api import APIError, check_metadata

router = APIRouter()


def _job_of(request: Request, s: ServerState, job_id: str) -> tuple[str, Optional[str]]:
    """(the job id from the path, whose jobs the caller sees), once the caller's key is checked; a
    404 for an id that is not one: `ftjob-x.checkpoints` names a job's side file, never a job."""
    owner = s.owner(request)
    if not JOB_ID.fullmatch(job_id):
        raise APIError(404, f"no fine-tuning job {job_id!r}", "fine_tuning_job_id")
    return job_id, owner


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes (by its
    Content-Length before any is read, else while it streams in), so nothing over it is kept."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"the upload is {declared} bytes, over this server's limit of {limit}", "file",
                       "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the upload passed this server's limit of {limit} bytes", "file", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/files")
async def upload(request: Request, s: State):
    """multipart/form-data with `file` and `purpose` (fine-tune), as OpenAI's SDKs send it."""
    owner = s.caller(request, "fine-tune").key_id  # an upload belongs to the key that made it
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(400, "POST /v1/files takes multipart/form-data with 'file' and 'purpose' (fine-tune), not "
                            f"{request.headers.get('content-type') or 'a body without a content type'}")
    data = await _bounded_body(request, s.files.max_bytes + (64 << 10))  # room for the multipart framing
    request._body = data  # Starlette parses the form from the body read above
    try:
        form = await request.form()
    except Exception as e:  # a body that is not multipart
        raise APIError(400, f"POST /v1/files takes multipart/form-data with 'file' and 'purpose' ({e})") from None
    other = sorted({k.partition("[")[0] for k in form.keys()} - {"file", "purpose"})
    if other:  # OpenAI's expires_after (sent as expires_after[anchor], expires_after[seconds]), or a field it has not
        why = ("evo keeps a file until it is deleted (DELETE /v1/files/{id})" if other[0] == "expires_after"
               else "evo does not support it")
        raise APIError(400, f"{other[0]}: {why}", other[0])
    upload, purpose = form.get("file"), form.get("purpose")
    if upload is None or isinstance(upload, str):
        raise APIError(400, "multipart field 'file' is missing (the JSONL file to upload)", "file")
    if not isinstance(purpose, str) or not purpose:
        raise APIError(400, "multipart field 'purpose' is missing (fine-tune)", "purpose")
    content = await upload.read()
    return await asyncio.to_thread(s.files.create, content, upload.filename or "upload.jsonl", purpose, owner)


@router.get("/v1/files")
def list_files(request: Request, s: State, purpose: Optional[str] = None, after: Optional[str] = None,
               limit: int = 10000, order: str = "desc"):
    return s.files.list(s.owner(request), purpose, after, max(1, limit), order)


@router.get("/v1/files/{file_id}")
def get_file(request: Request, s: State, file_id: str):
    return s.files.get(file_id, s.owner(request))


@router.get("/v1/files/{file_id}/content")
def file_content(request: Request, s: State, file_id: str):
    return Response(s.files.content(file_id, s.owner(request)), media_type="application/jsonl")


@router.delete("/v1/files/{file_id}")
def delete_file(request: Request, s: State, file_id: str):
    return s.files.delete(file_id, s.owner(request))


def _job_model(s: ServerState, name: str, owner: Optional[str]) -> tuple[str, str]:
    """A job's `model`, its parent: a generation id, a sha (8+ characters), champion or candidate, or one
    of this key's fine-tuned models; (the generation id it names, its sha). `owner`: the caller's (None:
    an admin key or a keyless server). A tenant's job grows its own branch, from the shared line or its
    own models; an admin's job grows the shared line, from the shared line's models only
    (`evo.lineage.registry`)."""
    sha = s.gw.resolve(name, None, owner).sha if name.startswith("ft:") else s.gw.registry.find(name)
    m = s.gw.registry.model(sha) if sha else None
    if m is None or m["status"] == "withdrawn" or not visible(m, owner):  # another key's: not there
        raise APIError(404, f"model '{name}' is not a model here: give a generation (gen-N), a sha, "
                            "champion, or one of your fine-tuned models (GET /v1/models)", "model", "not_found_error")
    if not visible(m, owner or SHARED):
        raise APIError(400, f"model '{name}' is on {owner_of(m)}'s branch, and a job of an admin key grows the shared "
                            "line, from its models only: promote that model onto the shared line first (POST "
                            f"/admin/promote {{\"gen\": \"{m['gen_id']}\"}})", "model")
    return m["gen_id"], sha


@router.post("/v1/fine_tuning/jobs")
async def create_job(request: Request, s: State):
    caller = s.caller(request, "fine-tune")
    body = await read_json(request)
    check_metadata(body.get("metadata") if isinstance(body, dict) else None)
    job = s.jobs.store.create(body, caller.key_id, caller.owner, s.files, lambda name: _job_model(s, name, caller.owner))
    return public(await asyncio.to_thread(s.jobs.start, job))


@router.get("/v1/fine_tuning/jobs", openapi_extra={"x-evo-query-prefixes": ["metadata"]})  # metadata[k]=v, metadata=null
def list_jobs(request: Request, s: State, after: Optional[str] = None, limit: int = 20):
    owner = s.owner(request)
    for job in s.jobs.store.all():
        if owner is None or job["owner"] == owner:
            s.jobs.settle(job)
    return s.jobs.store.list(owner, after, limit, _metadata_filter(request))


def _metadata_filter(request: Request) -> Optional[dict[str, str]]:
    """OpenAI's `metadata[key]=value` query pairs (`metadata=null`: jobs without metadata); None: no filter."""
    pairs = {k[len("metadata["):-1]: v for k, v in request.query_params.multi_items()
             if k.startswith("metadata[") and k.endswith("]")}
    if pairs:
        return pairs
    raw = request.query_params.get("metadata")
    if raw is None:
        return None
    if raw == "null":
        return {}
    raise APIError(400, f"metadata filters as metadata[key]=value (or metadata=null), not metadata={raw!r}", "metadata")


@router.get("/v1/fine_tuning/jobs/{job_id}")
def get_job(request: Request, s: State, job_id: str):
    return public(s.jobs.settle(s.jobs.store.raw(*_job_of(request, s, job_id))))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
async def cancel_job(request: Request, s: State, job_id: str):
    return public(await asyncio.to_thread(s.jobs.cancel, *_job_of(request, s, job_id)))


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
async def pause_job(request: Request, s: State, job_id: str):
    """OpenAI's pause: a running job stops training at a checkpoint and waits, status paused."""
    return public(await asyncio.to_thread(s.jobs.pause, *_job_of(request, s, job_id)))


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
async def resume_job(request: Request, s: State, job_id: str):
    """OpenAI's resume: a paused job runs again from the checkpoint it paused at."""
    return public(await asyncio.to_thread(s.jobs.resume, *_job_of(request, s, job_id)))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def job_events(request: Request, s: State, job_id: str, after: Optional[str] = None, limit: int = 20):
    return s.jobs.store.events(*_job_of(request, s, job_id), after, limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def job_checkpoints(request: Request, s: State, job_id: str, after: Optional[str] = None, limit: int = 10):
    return s.jobs.store.checkpoints(*_job_of(request, s, job_id), after, limit)
