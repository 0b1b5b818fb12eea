// codeexec console: a small page over the server's own JSON. Everything
// the server or the code sent is shown with textContent, never as HTML.
"use strict";
(function () {
  const KEY = "codeexec.key";
  const $ = (id) => document.getElementById(id);
  const pages = ["status", "languages", "live", "history", "playground"];
  let timer = null;
  let languages = null;
  let inputs = []; // uploaded files sent with every playground run
  const blobs = []; // object URLs of the last run, revoked on the next

  const samples = {
    py: 'import matplotlib.pyplot as plt\nimport numpy as np\n\nx = np.linspace(0, 4 * np.pi, 200)\nfig, ax = plt.subplots(figsize=(6, 3.5))\nax.plot(x, np.sin(x), label="sin")\nax.plot(x, np.cos(x), label="cos")\nax.set_title("Waves from codeexec")\nax.legend()\nfig.savefig("/mnt/data/waves.png", dpi=100)\nprint("saved", ax.get_title())\n',
    bash: 'echo "hello from $(uname -s)"\nls -la /mnt/data\n',
    js: 'console.log("hello from node", process.version);\n',
    ts: 'const greet = (n: string): string => `hello ${n}`;\nconsole.log(greet("typescript"));\n',
    r: 'x <- rnorm(100)\nprint(summary(x))\n',
  };

  function key() { return sessionStorage.getItem(KEY) || ""; }

  class Unauthorized extends Error {}

  // api fetches a path relative to /console/ with the key; a 401 signs out.
  async function api(path, opts) {
    opts = opts || {};
    // An API key goes as X-API-Key; a JWT (three base64url parts) as a
    // bearer token, the only way the server accepts one.
    const k = opts.key || key();
    const cred = /^[\w-]+\.[\w-]+\.[\w-]+$/.test(k) ? { Authorization: "Bearer " + k } : { "X-API-Key": k };
    const headers = Object.assign(cred, opts.headers || {});
    const resp = await fetch(path, Object.assign({}, opts, { headers: headers, cache: "no-store" }));
    if (resp.status === 401) {
      throw new Unauthorized("key refused");
    }
    return resp;
  }
  async function apiJSON(path, opts) {
    const resp = await api(path, opts);
    let body = null;
    try { body = await resp.json(); } catch (e) { body = null; }
    if (!resp.ok) {
      throw new Error((body && (body.message || body.error)) || ("HTTP " + resp.status));
    }
    return body;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
      tr.appendChild(td);
    }
    return tr;
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }
  function ms(v) { return v >= 1000 ? (v / 1000).toFixed(2) + " s" : (Math.round(v * 10) / 10) + " ms"; }
  function bytes(v) {
    if (!v) return "–";
    const u = ["B", "KiB", "MiB", "GiB"];
    let i = 0;
    while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function card(title, value, sub, id) {
    const d = el("div", null, "card");
    if (id) d.id = id;
    d.appendChild(el("div", title, "card-title"));
    d.appendChild(el("div", value, "card-value"));
    if (sub) d.appendChild(el("div", sub, "card-sub"));
    return d;
  }

  // --- sign in ---
  function showLogin(msg) {
    stop();
    $("nav").hidden = true;
    for (const p of pages) $(p).hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = msg || "";
  }
  async function signIn(k) {
    try {
      await apiJSON("api/status", { key: k });
    } catch (e) {
      if (e instanceof Unauthorized) {
        sessionStorage.removeItem(KEY);
        showLogin("Key refused (401): check the API key.");
        return;
      }
      showLogin("Server unreachable: " + e.message);
      return;
    }
    sessionStorage.setItem(KEY, k);
    $("login").hidden = true;
    $("nav").hidden = false;
    route();
  }
  function failed(e, where) {
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      showLogin("Key refused (401): sign in again.");
      return;
    }
    where.textContent = "Error: " + e.message;
  }

  // --- routing and polling ---
  function stop() { if (timer) { clearTimeout(timer); timer = null; } }
  function every(fn, period) {
    stop();
    const tick = async () => {
      await fn();
      if (!document.hidden) timer = setTimeout(tick, period);
      else timer = setTimeout(tick, period * 5);
    };
    tick();
  }
  function route() {
    if (!key()) { showLogin(); return; }
    let page = location.hash.slice(1);
    if (!pages.includes(page)) page = "status";
    for (const p of pages) $(p).hidden = p !== page;
    for (const a of $("nav").querySelectorAll("a")) a.classList.toggle("active", a.getAttribute("href") === "#" + page);
    stop();
    if (page === "status") every(loadStatus, 5000);
    if (page === "languages") loadLanguages();
    if (page === "live" || page === "history") every(loadExecutions, 1000);
    if (page === "playground") setupPlayground();
  }

  // --- status ---
  async function loadStatus() {
    let s;
    try { s = await apiJSON("api/status"); } catch (e) { failed(e, $("status-cards")); return; }
    const iso = s.isolation || {};
    const cg = iso.cgroup || {};
    const warm = (iso.warm || {}).python;
    let warmText = "off", warmSub = "";
    if (warm && typeof warm === "object") {
      warmText = warm.ready + " / " + warm.templates + " ready";
      warmSub = warm.preloaded + " preloaded, " + warm.lean + " lean templates";
    } else if (typeof warm === "string") warmText = warm;
    const load = s.load || {};
    $("status-cards").replaceChildren(
      card("Health", s.status, "up " + Math.round(s.uptime_seconds / 60) + " min", "card-health"),
      card("Sandbox", iso.backend || "?", iso.degraded ? "DEGRADED: no cgroups" : (iso.slots ? iso.slots + " slots" : ""), "card-backend"),
      card("cgroups", cg.version ? "v" + cg.version : (cg.version === 0 ? "none" : "?"), cg.path || cg.instead || "", "card-cgroup"),
      card("Warm pool", warmText, warmSub, "card-warm"),
      card("Storage", (s.storage || "?").split(" ")[0], (s.storage || "").split(" ").slice(1).join(" "), "card-storage"),
      card("Executions", (load.running || 0) + " / " + (load.concurrency || "?") + " running", (load.queued || 0) + " queued of " + (load.queue_cap || "?"), "card-load"),
      card("Stateful sessions", s.runtime_sessions === undefined ? "off" : s.runtime_sessions, "", "card-runtime"),
    );
    fill($("doctor").tBodies[0], (s.doctor || []).map((c) => {
      const tr = row([c.name, c.ok ? "ok" : (c.required ? "MISSING" : "absent"), c.ok ? c.detail : (c.detail + (c.fix ? " — fix: " + c.fix : ""))]);
      tr.className = c.ok ? "ok" : (c.required ? "bad" : "warn");
      return tr;
    }));
    $("isolation").textContent = JSON.stringify(iso, null, 2);
    $("limits").textContent = JSON.stringify(s.limits || {}, null, 2);
  }

  // --- languages ---
  async function getLanguages() {
    if (!languages) languages = await apiJSON("../languages");
    return languages;
  }
  async function loadLanguages() {
    let ls;
    try { ls = await getLanguages(); } catch (e) { failed(e, $("lang-table").tBodies[0]); return; }
    fill($("lang-table").tBodies[0], ls.map((l) => {
      const tr = row([l.id, l.name, l.version || "", l.available ? "yes" : l.missing]);
      tr.className = l.available ? "ok" : "warn";
      tr.dataset.lang = l.id;
      return tr;
    }));
  }

  // --- live and history ---
  async function loadExecutions() {
    let s;
    try { s = await apiJSON("api/executions"); } catch (e) { failed(e, $("live-empty")); return; }
    $("live-count").textContent = s.running.length;
    $("live-empty").hidden = s.running.length > 0;
    fill($("live-table").tBodies[0], s.running.map((r) => {
      const tr = row([r.language, r.caller, ms(r.elapsed_ms)]);
      tr.dataset.lang = r.language;
      return tr;
    }));
    $("hist-total").textContent = Math.min(s.total, 1024);
    $("hist-langs").replaceChildren(...s.languages.map(langCard));
    fill($("hist-table").tBodies[0], s.recent.map((r) => {
      const tr = row([new Date(r.at).toLocaleTimeString(), r.language, r.status, ms(r.wall_ms), bytes(r.memory_peak_bytes), r.caller]);
      tr.className = r.status === "ok" ? "" : "warn";
      tr.dataset.lang = r.language;
      return tr;
    }));
  }
  function langCard(st) {
    const d = el("div", null, "card lang-card");
    d.dataset.lang = st.language;
    d.appendChild(el("div", st.language + " · " + st.count + " runs", "card-title"));
    d.appendChild(el("div", "p50 " + ms(st.p50_ms) + " · p90 " + ms(st.p90_ms) + " · p99 " + ms(st.p99_ms), "card-sub"));
    d.appendChild(chart(st.series, st.p50_ms));
    d.appendChild(el("div", Object.entries(st.statuses).map(([k, v]) => k + " " + v).join(", "), "card-sub"));
    return d;
  }
  // chart draws one bar per run (oldest left) and the median as a line.
  function chart(series, p50) {
    const NS = "http://www.w3.org/2000/svg";
    const W = 240, H = 60;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("class", "chart");
    svg.setAttribute("role", "img");
    const top = Math.max(...series, 1);
    const bw = W / Math.max(series.length, 30);
    series.forEach((v, i) => {
      const h = Math.max(1, (v / top) * (H - 4));
      const r = document.createElementNS(NS, "rect");
      r.setAttribute("x", (i * bw).toFixed(2));
      r.setAttribute("y", (H - h).toFixed(2));
      r.setAttribute("width", Math.max(bw - 1, 0.5).toFixed(2));
      r.setAttribute("height", h.toFixed(2));
      r.setAttribute("class", "bar");
      svg.appendChild(r);
    });
    const y = (H - (p50 / top) * (H - 4)).toFixed(2);
    const line = document.createElementNS(NS, "line");
    line.setAttribute("x1", "0"); line.setAttribute("x2", String(W));
    line.setAttribute("y1", y); line.setAttribute("y2", y);
    line.setAttribute("class", "median");
    svg.appendChild(line);
    const t = document.createElementNS(NS, "title");
    t.textContent = "wall time of the last " + series.length + " runs; line: median; top " + ms(top);
    svg.appendChild(t);
    return svg;
  }

  // --- playground ---
  let playgroundReady = false;
  async function setupPlayground() {
    if (playgroundReady) return;
    let ls;
    try { ls = await getLanguages(); } catch (e) { failed(e, $("pg-state")); return; }
    playgroundReady = true;
    const sel = $("pg-lang");
    sel.replaceChildren(...ls.filter((l) => l.available).map((l) => {
      const o = el("option", l.id + " — " + l.name);
      o.value = l.id;
      return o;
    }));
    sel.value = "py";
    $("pg-code").value = samples.py;
    sel.addEventListener("change", () => {
      const cur = $("pg-code").value;
      if (!cur.trim() || Object.values(samples).includes(cur)) $("pg-code").value = samples[sel.value] || "";
    });
  }
  function showInputs() {
    $("pg-inputs").replaceChildren(...inputs.map((f) => el("li", "/mnt/data/" + f.name)));
  }
  async function upload() {
    const files = $("pg-files").files;
    if (!files.length) { $("pg-state").textContent = "Choose files first."; return; }
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    $("pg-state").textContent = "Uploading…";
    try {
      const r = await apiJSON("../upload/batch", { method: "POST", body: form });
      for (const f of r.files) {
        if (f.status !== "error") {
          inputs = inputs.filter((x) => x.name !== f.filename);
          inputs.push({ id: f.fileId, session_id: r.session_id, name: f.filename });
        }
      }
      showInputs();
      $("pg-files").value = "";
      $("pg-state").textContent = "Uploaded " + r.succeeded + " file(s)" + (r.failed ? ", " + r.failed + " failed" : "") + ".";
    } catch (e) { failed(e, $("pg-state")); }
  }
  async function run() {
    const btn = $("pg-run");
    btn.disabled = true;
    $("pg-state").textContent = "Running…";
    const t0 = performance.now();
    try {
      const res = await apiJSON("../exec", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ lang: $("pg-lang").value, code: $("pg-code").value, files: inputs }),
      });
      $("pg-state").textContent = "Done in " + ms(performance.now() - t0) + " (round trip).";
      await showResult(res);
    } catch (e) {
      failed(e, $("pg-state"));
    } finally {
      btn.disabled = false;
    }
  }
  async function showResult(res) {
    while (blobs.length) URL.revokeObjectURL(blobs.pop());
    $("pg-result").hidden = false;
    $("pg-status").textContent = res.status;
    $("pg-status").className = res.status === "ok" ? "good" : "bad";
    $("pg-exit").textContent = res.exit_code;
    $("pg-wall").textContent = ms(res.wall_time_ms);
    $("pg-mem").textContent = bytes(res.memory_peak_bytes) + " peak";
    $("pg-stdout").textContent = res.stdout;
    $("pg-stderr").textContent = res.stderr;
    const out = $("pg-outputs");
    out.replaceChildren();
    const made = (res.files || []).filter((f) => !f.inherited);
    if (!made.length) out.appendChild(el("p", "No files written to /mnt/data.", "hint"));
    for (const f of made) {
      const box = el("div", null, "output");
      box.dataset.name = f.name;
      const url = "../download/" + encodeURIComponent(f.storage_session_id) + "/" + encodeURIComponent(f.id);
      const link = el("button", "Download " + f.name + " (" + bytes(f.size) + ")", "link");
      link.type = "button";
      link.addEventListener("click", () => save(url, f.name));
      box.appendChild(link);
      if (/\.(png|jpe?g|gif|webp|svg)$/i.test(f.name) || /^image\//.test(f.contentType || "")) {
        try {
          const b = await (await api(url)).blob();
          const u = URL.createObjectURL(b);
          blobs.push(u);
          const img = el("img");
          img.alt = f.name;
          img.src = u;
          box.appendChild(img);
        } catch (e) { box.appendChild(el("p", "could not load: " + e.message, "error")); }
      }
      out.appendChild(box);
    }
  }
  async function save(url, name) {
    try {
      const b = await (await api(url)).blob();
      const u = URL.createObjectURL(b);
      const a = el("a");
      a.href = u;
      a.download = name.split("/").pop();
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 10000);
    } catch (e) { failed(e, $("pg-state")); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      signIn($("key").value.trim());
    });
    $("logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      languages = null;
      showLogin("Signed out.");
    });
    $("pg-upload").addEventListener("click", upload);
    $("pg-run").addEventListener("click", run);
    window.addEventListener("hashchange", route);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && key()) route(); });
    if (key()) signIn(key()); else showLogin();
  });
})();
