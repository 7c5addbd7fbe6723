// edgefleet console: the API key lives in sessionStorage (this tab only) and goes on every htmx
// request as a bearer token; server-sent events tell the page which data changed, and the
// fragments listening for that topic re-fetch themselves.
(function () {
  "use strict";
  const KEY = "edgefleet.apiKey";
  const key = () => sessionStorage.getItem(KEY) || "";

  document.body.addEventListener("htmx:configRequest", (e) => {
    if (key()) e.detail.headers["Authorization"] = "Bearer " + key();
  });
  // While an action is in flight, live refreshes wait: swapping out the element that sent the
  // request would drop its answer (and its redirect). The answer's HX-Trigger refreshes afterwards.
  window.efBusy = false;
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    if (e.detail.requestConfig && e.detail.requestConfig.verb !== "get") window.efBusy = true;
  });
  document.body.addEventListener("htmx:afterRequest", (e) => {
    if (e.detail.requestConfig && e.detail.requestConfig.verb !== "get") {
      window.efBusy = false;
      htmx.trigger(document.body, "ef:refresh");  // what changed while the action ran
    }
  });

  function flash(text, ok) {
    const box = document.getElementById("flash");
    if (!box) return;
    box.innerHTML = "";
    const div = document.createElement("div");
    div.className = "flash " + (ok ? "ok" : "bad");
    div.setAttribute("role", ok ? "status" : "alert");
    div.textContent = text;
    box.appendChild(div);
  }

  document.body.addEventListener("htmx:responseError", (e) => {
    const xhr = e.detail.xhr;
    let msg = xhr.status + " " + xhr.statusText;
    try { msg = JSON.parse(xhr.responseText).message || msg; } catch (_) { /* not JSON */ }
    if (xhr.status === 401) msg += " — enter an API key above";
    if (xhr.status === 403) msg += " — this needs a read-write key";
    flash(msg, false);
  });
  document.body.addEventListener("ef:flash", (e) => flash(e.detail.value, true));

  const form = document.getElementById("keyform");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("apikey");
    if (input.value) sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    renderKeyState();
    connect();
    htmx.trigger(document.body, "ef:key");
  });
  document.getElementById("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    renderKeyState();
    htmx.trigger(document.body, "ef:key");
  });
  function renderKeyState() {
    document.getElementById("apikey").placeholder = key() ? "key set for this tab ✓" : "API key (kept for this tab)";
  }
  renderKeyState();

  // ---- live updates (SSE). EventSource sends no headers: trade the key for a one-use ticket first.
  let source = null;
  let retry = 1000;
  async function connect() {
    if (source) { source.close(); source = null; }
    const live = document.getElementById("live");
    const headers = key() ? { "Authorization": "Bearer " + key() } : {};
    let ticket;
    try {
      const r = await fetch("/console/stream-ticket", { method: "POST", headers });
      if (!r.ok) { live.className = "live off"; live.title = "live updates need a valid key"; return; }
      ticket = (await r.json()).data.ticket;
    } catch (_) { setTimeout(connect, retry = Math.min(retry * 2, 15000)); return; }
    source = new EventSource("/console/stream?ticket=" + encodeURIComponent(ticket));
    source.onopen = () => { live.className = "live on"; retry = 1000; };
    source.onerror = () => {
      live.className = "live off";
      source.close(); source = null;
      setTimeout(connect, retry = Math.min(retry * 2, 15000));
    };
    for (const topic of ["devices", "telemetry", "jobs", "deployments", "rollouts"]) {
      source.addEventListener(topic, () => {
        window.efEvents = (window.efEvents || 0) + 1;  // read by the browser test and the latency benchmark
        htmx.trigger(document.body, "ef:" + topic);
      });
    }
  }
  if ((document.body.dataset.live || "").trim()) connect();
  // Browsers allow 6 HTTP/1.1 connections per host: a stream left open by a page we navigated away
  // from (kept in the back/forward cache) would soon starve the fragment requests. Close it on the way out.
  window.addEventListener("pagehide", () => { if (source) { source.close(); source = null; } });
  window.addEventListener("pageshow", (e) => { if (e.persisted && (document.body.dataset.live || "").trim()) connect(); });

  // ---- telemetry charts (uPlot) on the device page: data from the REST metrics endpoint
  async function drawTelemetry(el) {
    const headers = key() ? { "Authorization": "Bearer " + key() } : {};
    const r = await fetch("/api/v1/devices/" + encodeURIComponent(el.dataset.device) + "/metrics?limit=600", { headers });
    if (!r.ok) { el.textContent = "no telemetry (" + r.status + ")"; return; }
    const samples = (await r.json()).data.samples;
    if (!samples.length) { el.textContent = "no telemetry yet"; return; }
    const t = samples.map((s) => Date.parse(s.ts) / 1000);
    const series = [["latency_ms_p50", "p50 latency ms", "#4269d0"], ["cpu_percent", "CPU %", "#efb118"],
                    ["mem_percent", "memory %", "#6cc5b0"], ["errors", "errors", "#ff725c"]];
    const data = [t].concat(series.map(([k]) => samples.map((s) => s[k] == null ? null : s[k])));
    el.innerHTML = "";
    new uPlot({ width: Math.min(el.clientWidth || 900, 1000), height: 260,
                series: [{}].concat(series.map(([, label, stroke]) => ({ label, stroke, width: 1.5 }))) }, data, el);
  }
  document.body.addEventListener("htmx:afterSettle", () => {
    document.querySelectorAll("[data-telemetry-chart]").forEach((el) => drawTelemetry(el));
  });
})();
