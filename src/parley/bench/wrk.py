"""Drive HTTP load with wrk (C, one thread on the other core) and Lua request scripts."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

COMMON = r"""
local users = {}
local idx = 0
local mode, T, extra = "idle", "0", ""
local threads = {}
request_bytes, requests_made = 0, 0  -- per thread, read back in done()

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  mode, T, extra = args[2] or "idle", args[3] or "0", args[4] or ""
  for line in io.lines(path) do
    local id, token, group = line:match("(%S+) (%S+) ?(%S*)")
    if id then users[#users + 1] = {id, token, group} end
  end
  math.randomseed(os.time() + (tonumber(tostring({}):match("0x(%x+)"), 16) or 0) % 100000)
  idx = math.random(#users)
end

local function auth(u)
  return {["Authorization"] = "Bearer " .. u[2], ["Content-Type"] = "application/json"}
end

local function check(u)
  return wrk.format("GET", "/v1/messages/" .. u[1] .. "?timestamp=" .. T, auth(u))
end

local function send_private(u)
  local to = users[math.random(#users)]
  local body = '{"senderId":"' .. u[1] .. '","receiverId":"' .. to[1] ..
    '","message":"bench message"}'
  return wrk.format("POST", "/v1/messages/send?type=private", auth(u), body)
end

local function send_group(u)
  local body = '{"senderId":"' .. u[1] .. '","groupId":"' .. extra .. '","message":"bench message"}'
  return wrk.format("POST", "/v1/messages/send?type=group", auth(u), body)
end

local function build()
  idx = idx % #users + 1
  local u = users[idx]
  if mode == "hello" then return wrk.format("GET", "/") end
  if mode == "idle" or mode == "check" then return check(u) end
  if mode == "idle-events" then
    return wrk.format("GET", "/v1/messages/" .. u[1] .. "?include=events&timestamp=" .. T, auth(u))
  end
  if mode == "private" then return send_private(u) end
  if mode == "group" then return send_group(u) end
  if mode == "mix" then
    -- the workload model: 1 check a minute and 10 sends a day per user
    if math.random() < 10 / 1440 then return send_private(u) end
    return check(u)
  end
end

function request()
  local r = build()
  request_bytes = request_bytes + #r
  requests_made = requests_made + 1
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  local sent, made = 0, 0
  for _, thread in ipairs(threads) do
    sent = sent + (thread:get("request_bytes") or 0)
    made = made + (thread:get("requests_made") or 0)
  end
  io.write(string.format(
    '\nRESULT {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d,"bytes_read":%d,' ..
    '"request_bytes":%d,"requests_made":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    summary.bytes, sent, made))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    response_bytes: float | None = None  # per response, headers included (wrk's bytes read)
    request_bytes: float | None = None  # per request, as the script built it


def available() -> bool:
    return shutil.which("wrk") is not None


def run(
    url: str,
    workdir: Path,
    users_file: Path,
    mode: str,
    cursor: int = 0,
    extra: str = "",
    seconds: float = 10,
    connections: int = 64,
    threads: int = 1,
) -> WrkResult:
    script = workdir / "parley.lua"
    script.write_text(COMMON)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
        "--",
        str(users_file),
        mode,
        str(cursor),
        extra,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_result(out.stdout, out.stderr)


def parse_result(stdout: str, stderr: str = "") -> WrkResult:
    """The figures of the script's ``RESULT {...}`` line (older scripts lack the byte counts)."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{stdout}\n{stderr}")
    data = json.loads(line[len("RESULT ") :])
    secs = data["duration_us"] / 1e6
    requests = data["requests"]
    made = data.get("requests_made", 0)
    return WrkResult(
        requests=data["requests"],
        seconds=secs,
        rps=data["requests"] / secs if secs else 0.0,
        status_errors=data["status_errors"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        response_bytes=data["bytes_read"] / requests if requests and "bytes_read" in data else None,
        request_bytes=data["request_bytes"] / made if made else None,
    )
