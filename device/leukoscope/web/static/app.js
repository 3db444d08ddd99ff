// Leukoscope status page: polls /api/status, starts captures, refreshes the live view.
// No inline scripts (the CSP forbids them); no outside assets.
"use strict";
// Every page: stored UTC times shown in this browser's local time (the UTC text stays
// without JavaScript), and the report's print button.
(function () {
  const two = (n) => String(n).padStart(2, "0");
  // Year first and the offset said: "03/12" means two different days in two countries.
  function local(when) {
    const off = -when.getTimezoneOffset();
    const zone = "UTC" + (off < 0 ? "\u2212" : "+") + two(Math.floor(Math.abs(off) / 60)) + ":" + two(Math.abs(off) % 60);
    return when.getFullYear() + "-" + two(when.getMonth() + 1) + "-" + two(when.getDate()) + " " +
      two(when.getHours()) + ":" + two(when.getMinutes()) + " (" + (off === 0 ? "UTC" : zone) + ")";
  }
  // The server wrote the appliance's local time; this browser's may differ.
  function showLocal(root) {
    for (const el of root.querySelectorAll("time.local[datetime]:not(.shown-local)")) {
      const when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when)) {
        el.title = el.textContent + " on the appliance";
        el.textContent = local(when);
        el.classList.add("shown-local");
      }
    }
  }
  window.leukoscopeShowLocal = showLocal;
  showLocal(document);
  const print = document.getElementById("print-button");
  if (print) print.addEventListener("click", () => window.print());
})();

(function () {
  if (document.body.dataset.page !== "status") return;
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let seq = Number($("state").dataset.seq || 0);
  let waitingFor = null; // result_seq we are waiting to pass after our capture
  let timer = null;

  // A new result: the server draws its banner (one template for the page and for this).
  async function showLatest() {
    try {
      const resp = await fetch("/status/latest", { cache: "no-store", credentials: "same-origin" });
      if (!resp.ok) return;
      const html = await resp.text();
      const doc = new DOMParser().parseFromString(html, "text/html");
      const fresh = doc.getElementById("last-result");
      if (!fresh) return;
      const box = $("latest");
      box.replaceChildren(document.importNode(fresh, true));
      window.leukoscopeShowLocal(box);
    } catch (e) { /* the next poll tries again */ }
  }

  function readyLine(s) {
    if (!s.ready) return "Not ready.";
    return s.phase === "busy" ? "Taking and analysing a photo\u2026" : "Ready for the next photo.";
  }

  function showState(s) {
    const phase = $("phase");
    phase.textContent = s.phase;
    phase.className = "phase p-" + s.phase;
    $("ready-line").textContent = readyLine(s);
    const faults = $("faults");
    faults.replaceChildren();
    for (const [part, msg] of Object.entries(s.faults || {})) {
      const li = document.createElement("li");
      li.textContent = part + ": " + msg;
      faults.appendChild(li);
    }
    $("fault-banner").hidden = faults.childElementCount === 0;
    $("indicator").textContent = s.indicator;
    $("model-label").textContent = s.model ? s.model.name + " " + s.model.version : "none";
    if (s.result_seq !== seq) {
      seq = s.result_seq;
      showLatest();
    }
    const button = $("capture-button");
    if (waitingFor !== null && s.result_seq > waitingFor) {
      waitingFor = null;
      $("capture-msg").textContent = "Done: the verdict is at the top of the page.";
      // The id is not kept for the next photo: only the open sample (if any) is named.
      const field = $("sample-id");
      if (field) field.value = s.active_sample || "";
      window.scrollTo({ top: 0, behavior: "smooth" });
    }
    if (button) button.disabled = waitingFor !== null || s.phase === "busy";
  }

  async function poll() {
    clearTimeout(timer);
    try {
      const resp = await fetch("/api/status", { cache: "no-store", credentials: "same-origin" });
      if (resp.ok) showState(await resp.json());
    } catch (e) { /* the daemon may be restarting: try again */ }
    const busy = waitingFor !== null || $("phase").textContent === "busy";
    timer = setTimeout(poll, document.hidden ? 5000 : (busy ? 300 : 1500));
  }

  async function capture(ev) {
    ev.preventDefault();
    const msg = $("capture-msg");
    const sample = $("sample-id").value.trim();
    msg.textContent = "Capturing…";
    $("capture-button").disabled = true;
    try {
      const resp = await fetch("/api/capture", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(sample ? { sample_id: sample } : {}),
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 202) {
        waitingFor = body.result_seq;
      } else {
        msg.textContent = body.error || ("Refused (" + resp.status + ")");
        $("capture-button").disabled = false;
      }
    } catch (e) {
      msg.textContent = "Cannot reach the appliance.";
      $("capture-button").disabled = false;
    }
    poll();
  }

  // The live view: one frame at a time, never while hidden, slower while a capture runs.
  const preview = $("preview");
  let previewUrl = null;
  async function refreshPreview() {
    let delay = 1000;
    if (!document.hidden) {
      try {
        const resp = await fetch("/api/preview.jpg", { cache: "no-store", credentials: "same-origin" });
        if (resp.ok) {
          const focus = resp.headers.get("X-Focus-Score");
          const good = resp.headers.get("X-Focus-Good") === "1";
          const paused = resp.headers.get("X-Preview-Paused") === "1";
          const blob = await resp.blob();
          if (previewUrl) URL.revokeObjectURL(previewUrl);
          previewUrl = URL.createObjectURL(blob);
          preview.src = previewUrl;
          $("focus").textContent = focus;
          const mark = $("focus-mark");
          mark.textContent = good ? "✓ good enough" : "not sharp yet";
          mark.className = "mark " + (good ? "good" : "poor");
          $("preview-note").textContent = paused ? "(paused during capture)" : "";
          if (paused) delay = 2000;
        } else {
          $("preview-note").textContent = "(no live view: " + resp.status + ")";
          delay = 5000;
        }
      } catch (e) { delay = 5000; }
    }
    setTimeout(refreshPreview, delay);
  }

  const form = $("capture-form");
  if (form) form.addEventListener("submit", capture);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  poll();
  refreshPreview();
})();

// The clock warning (issue 17): send this browser's time; the appliance trusts its clock
// for this boot if the two agree, else says by how much it is off.
(function () {
  const button = document.getElementById("clock-confirm");
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (!button || !meta) return;
  button.addEventListener("click", async () => {
    const reply = document.getElementById("clock-reply");
    const resp = await fetch("/api/clock", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": meta.content },
      body: JSON.stringify({ unix: Date.now() / 1000 }),
    });
    const body = await resp.json();
    reply.textContent = body.ok ? "Clock confirmed." : (body.error || "refused");
    if (body.ok) document.getElementById("clock-warning").hidden = true;
  });
})();
