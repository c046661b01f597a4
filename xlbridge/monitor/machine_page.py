"""
The machine monitor's page: the workers, the machine's calls, and links to
each worker's own monitor page.

Small on purpose.  The worker page (``static/app.js``) lives on its
WebSocket (captions, level meters, listen-in), which the supervisor does
not proxy; this page polls ``/api/calls`` every :data:`POLL_MS` instead and
links to the worker pages, which listen on ``127.0.0.1`` only.  The page
holds no data and no token (it reads the token from its own ``?token=``),
so it is served open, with the worker monitor's CSP: no inline script,
hence the separate script and style sheet.  Everything from the server is
written with ``textContent``, never parsed as HTML.
"""

from __future__ import annotations

#: Milliseconds between two ``/api/calls`` polls.
POLL_MS = 2000

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>xlbridge: machine monitor</title>
<link rel="stylesheet" href="/machine.css">
<script src="/machine.js" defer></script>
</head>
<body>
<h1>xlbridge machine monitor</h1>
<p id="status">Loading&hellip;</p>
<h2>Workers</h2>
<p class="note">Each worker's own page (live captions, levels, listen-in) is served on
<strong>127.0.0.1 only</strong>: its link works from a browser on this machine, or through an
SSH tunnel forwarding the same port.</p>
<table>
<thead><tr><th>Worker</th><th>State</th><th>PID</th><th>Restarts</th><th>Calls</th><th>Own page</th></tr></thead>
<tbody id="workers"></tbody>
</table>
<h2>Active calls</h2>
<table>
<thead><tr><th>Worker</th><th>Call</th><th>Legs</th><th>Duration</th></tr></thead>
<tbody id="calls"></tbody>
</table>
<h2>Recent calls</h2>
<table>
<thead><tr><th>Worker</th><th>Call</th><th>Extensions</th><th>Duration</th><th>Ended because</th></tr></thead>
<tbody id="recent"></tbody>
</table>
</body>
</html>
"""

SCRIPT = (
    b"""// The machine monitor page: polls /api/calls (Bearer token from ?token=).
"use strict";
(function () {
  const POLL_MS = """
    + str(POLL_MS).encode("ascii")
    + b""";
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const $ = (id) => document.getElementById(id);

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.appendChild(td);
    return td;
  }

  function fill(tbody, rows, render) {
    tbody.replaceChildren();
    for (const item of rows) {
      const tr = document.createElement("tr");
      render(tr, item);
      tbody.appendChild(tr);
    }
  }

  function seconds(value) {
    return typeof value === "number" ? Math.round(value) + " s" : "";
  }

  function workerState(w) {
    if (w.crash_loop) return "crash loop (held back)";
    if (!w.up) return "down";
    if (w.answered) return "up";
    return "up, monitor not answering" + (w.error ? ": " + w.error : "");
  }

  function render(doc) {
    const calls = doc.calls || [];
    const perWorker = new Map();
    for (const c of calls) perWorker.set(c.worker, (perWorker.get(c.worker) || 0) + 1);
    fill($("workers"), doc.workers || [], (tr, w) => {
      tr.className = w.answered ? "up" : "down";
      cell(tr, w.worker);
      cell(tr, workerState(w));
      cell(tr, w.pid);
      cell(tr, w.restarts);
      cell(tr, w.answered ? perWorker.get(w.worker) || 0 : "");
      const td = cell(tr, "");
      if (typeof w.monitor === "string" && /^https?:\\/\\//.test(w.monitor)) {
        const a = document.createElement("a");
        a.href = w.monitor + "?token=" + encodeURIComponent(token);
        a.rel = "noreferrer";
        a.textContent = w.monitor;
        td.appendChild(a);
      }
    });
    fill($("calls"), calls, (tr, c) => {
      cell(tr, c.worker);
      cell(tr, c.call_id);
      cell(tr, (c.legs || []).map((l) => l.extension + " (" + l.language + ", " + l.state + ")").join("  \\u2194  "));
      cell(tr, seconds(c.duration_s));
    });
    fill($("recent"), (doc.recent || []).slice(0, 100), (tr, c) => {
      cell(tr, c.worker);
      cell(tr, c.call_id);
      cell(tr, (c.extensions || []).join("  \\u2194  "));
      cell(tr, seconds(c.duration_s));
      cell(tr, c.reason);
    });
  }

  async function refresh() {
    if (!token) {
      $("status").textContent = "No ?token= in the page address.";
      return;
    }
    try {
      const response = await fetch("/api/calls", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        $("status").textContent = "Access refused (HTTP " + response.status + "): check the token.";
        return;  // no point asking again with the same token
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      $("status").textContent = "Updated " + new Date().toLocaleTimeString();
    } catch (e) {
      $("status").textContent = "Supervisor not answering (" + e.message + "); retrying.";
    }
    setTimeout(refresh, POLL_MS);
  }

  refresh();
})();
"""
)

STYLE = b"""body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
tr.down td { color: #a00; }
.note { color: #555; max-width: 50em; }
"""

#: Child name -> (content type, body), served open next to the page.
ASSETS = {
    b"machine.js": (b"text/javascript; charset=utf-8", SCRIPT),
    b"machine.css": (b"text/css; charset=utf-8", STYLE),
}
