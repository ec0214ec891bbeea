// Kalpana dashboard: plain JavaScript, no build step, no network but this Kalpana.
//
// Data comes from the HTTP API (/api/...) with the token kept in sessionStorage
// (forgotten when the tab closes). Live logs come from the SSE endpoints read
// with fetch(): EventSource can neither POST (deploy) nor send the
// Authorization header, so the event stream is parsed here.
// The list is re-read after every build's end event and every 15 s; builds
// running meanwhile (webhooks, file changes) are followed over SSE.
"use strict";

(() => {
  const TOKEN_KEY = "kalpana.token";
  const REFRESH_MS = 15000;
  const MAX_LINES = 5000; // per build kept in the page; older lines are dropped from view
  const HISTORY_PAGE = 10;
  const RECONNECTS = 3;

  const STATES = {
    running: ["ok", "●"],
    "crash-looping": ["warn", "▲"],
    failed: ["bad", "✕"],
    building: ["busy", "↻"],
    stopped: ["idle", "■"],
    "not deployed": ["idle", "○"],
  };
  const BUILD_STATUSES = {
    SUCCESS: ["ok", "✓"],
    FAILED: ["bad", "✕"],
    CANCELLED: ["idle", "⊘"],
    BUILDING: ["busy", "↻"],
    PENDING: ["idle", "…"],
  };

  const ENDED = ["SUCCESS", "FAILED", "CANCELLED"];

  const $ = (id) => document.getElementById(id);
  const state = {
    cards: new Map(), // deployment name -> card
    streams: new Map(), // build id -> BuildStream
    shown: null, // build id in the log panel
    busy: new Set(), // deployment names with an action in flight
    refreshing: null,
    refreshTimer: null,
    again: false,
    signedOut: false,
  };

  // -- HTTP -------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  async function api(path, { method = "GET", accept = "application/json", signal } = {}) {
    const headers = { Accept: accept };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    let response;
    try {
      response = await fetch(path, { method, headers, signal, cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, `cannot reach Kalpana (${err.message}): is \`kalpana watch\` still running?`);
    }
    if (response.status === 401) {
      askToken(t ? "That token was refused: enter the api_token of this Kalpana." : null);
      throw new ApiError(401, "the API token is missing or wrong");
    }
    if (!response.ok) throw new ApiError(response.status, await detailOf(response));
    return response;
  }

  async function detailOf(response) {
    try {
      const data = await response.json();
      if (typeof data.detail === "string") return data.detail;
      if (Array.isArray(data.detail)) return data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
      if (data.detail !== undefined) return JSON.stringify(data.detail);
    } catch (_) {
      // not JSON: fall through to the status line
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  const enc = encodeURIComponent;

  // Server-Sent Events over a fetch() body: calls onEvent(name, data) per event, resolves at the end of the body.
  async function readEvents(response, onEvent) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let carry = ""; // a "\r" at the end of a chunk may be half of "\r\n"
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let text = carry + value;
      carry = "";
      if (text.endsWith("\r")) {
        carry = "\r";
        text = text.slice(0, -1);
      }
      buffer += text.replace(/\r\n?/g, "\n");
      let at;
      while ((at = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, at);
        buffer = buffer.slice(at + 2);
        dispatch(block, onEvent);
      }
    }
    if (buffer.trim()) dispatch(buffer, onEvent);
  }

  function dispatch(block, onEvent) {
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    const raw = data.join("\n");
    let parsed;
    try {
      parsed = JSON.parse(raw);
    } catch (_) {
      parsed = { line: raw };
    }
    onEvent(name, parsed);
  }

  // -- build streams ------------------------------------------------------------

  // One build's log as it arrives, from a deploy POST or a GET .../logs follow.
  class BuildStream {
    constructor(id, deployment) {
      this.id = id;
      this.deployment = deployment;
      this.lines = []; // [kind, text]
      this.dropped = 0;
      this.phase = null;
      this.end = null; // the final Build
      this.problem = null;
      this.controller = new AbortController();
    }

    handle(name, data) {
      if (name === "log") this.add("line", String(data.line ?? ""));
      else if (name === "phase") {
        this.phase = String(data.phase ?? "");
        this.add("phase", `▶ ${this.phase}`);
      } else if (name === "end") {
        this.end = data || {};
        const error = this.end.error ? `: ${this.end.error}` : "";
        this.add("end", `■ build ${this.end.status || "ended"}${error}`);
      }
      if (name === "end") noteEnd(this.deployment, this.id, this.end);
      if (name === "phase" || name === "end") updateCurrent(this.deployment);
      if (name === "end") scheduleRefresh(300);
      if (state.shown === this.id) renderPanelHead();
    }

    fail(message) {
      this.problem = message;
      this.add("problem", `⚠ ${message}`);
      if (state.shown === this.id) renderPanelHead();
      updateCurrent(this.deployment);
    }

    add(kind, text) {
      this.lines.push([kind, text]);
      if (this.lines.length > MAX_LINES) {
        this.lines.shift();
        this.dropped += 1;
      }
      if (state.shown === this.id) appendLine(kind, text);
    }

    reset() {
      this.lines = [];
      this.dropped = 0;
      this.phase = null;
      this.problem = null;
      if (state.shown === this.id) showLog(this.id);
    }
  }

  // Follow build `id` over SSE (replay then live); reuses a stream that is already open.
  function follow(id, deployment) {
    const known = state.streams.get(id);
    if (known && !known.problem) return known;
    const stream = new BuildStream(id, deployment);
    state.streams.set(id, stream);
    (async () => {
      for (let attempt = 0; attempt <= RECONNECTS && !stream.end; attempt += 1) {
        if (attempt) {
          await sleep(3000);
          stream.reset(); // the server replays every line again
        }
        try {
          const response = await api(`/api/builds/${enc(id)}/logs`, {
            accept: "text/event-stream",
            signal: stream.controller.signal,
          });
          await readEvents(response, (name, data) => stream.handle(name, data));
        } catch (err) {
          if (err.name === "AbortError") return;
          if (err.status) { // the server answered: retrying would get the same answer
            stream.fail(err.message);
            return;
          }
        }
      }
      if (!stream.end) stream.fail("the log stream closed before the build ended");
    })();
    return stream;
  }

  // Make `id` the stream fed by a deploy POST (replacing a follower that may have started first).
  function adopt(id, deployment, controller) {
    const known = state.streams.get(id);
    if (known) known.controller.abort();
    const stream = new BuildStream(id, deployment);
    stream.controller = controller;
    state.streams.set(id, stream);
    return stream;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // -- actions ----------------------------------------------------------------------

  async function deploy(name) {
    state.busy.add(name);
    updateButtons(name);
    showPending(`Starting a build of ${name}…`);
    const controller = new AbortController();
    let stream = null;
    try {
      const response = await api(`/api/deployments/${enc(name)}/deploy`, {
        method: "POST",
        accept: "text/event-stream",
        signal: controller.signal,
      });
      await readEvents(response, (event, data) => {
        if (event === "build" || !stream) {
          stream = adopt(String(data.build ?? "?"), name, controller);
          noteBuild(name, stream.id);
          showLog(stream.id);
          updateCurrent(name);
          if (event === "build") return;
        }
        stream.handle(event, data);
      });
      if (stream && !stream.end) stream.fail("the stream closed before the build ended");
    } catch (err) {
      if (err.name !== "AbortError" && err.status !== 401) {
        if (stream) stream.fail(err.message);
        else showPending(`Deploy of ${name} failed: ${err.message}`);
        showAlert(`Deploy ${name}: ${err.message}`);
      }
    } finally {
      state.busy.delete(name);
      updateButtons(name);
      scheduleRefresh(0);
    }
  }

  async function operate(name, action) {
    state.busy.add(name);
    updateButtons(name);
    try {
      const response = await api(`/api/deployments/${enc(name)}/${action}`, { method: "POST" });
      const data = await response.json();
      if (data.deployment) updateCard(data.deployment);
      clearAlert();
    } catch (err) {
      if (err.status !== 401) showAlert(`${action} ${name}: ${err.message}`);
    } finally {
      state.busy.delete(name);
      updateButtons(name);
      scheduleRefresh(0);
    }
  }

  async function copyText(text, button) {
    try {
      if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
      else {
        // Plain http on another host than localhost has no Clipboard API.
        const area = h("textarea", { class: "offscreen", readonly: true, "aria-hidden": "true" });
        area.value = text;
        document.body.append(area);
        area.select();
        const ok = document.execCommand("copy");
        area.remove();
        if (!ok) throw new Error("the browser refused");
      }
      flash(button, "Copied");
    } catch (err) {
      flash(button, "Copy failed");
      showAlert(`Could not copy the webhook URL (${err.message}): select it and copy it by hand.`);
    }
  }

  function flash(button, text) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = text;
    setTimeout(() => { button.textContent = label; }, 2000);
  }

  // -- the list -----------------------------------------------------------------------

  function scheduleRefresh(delay) {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, delay);
  }

  async function refresh() {
    clearTimeout(state.refreshTimer);
    if (state.refreshing) { // an answer already on its way may predate what asked for this one
      state.again = true;
      return state.refreshing;
    }
    state.again = false;
    state.refreshing = (async () => {
      try {
        const data = await (await api("/api/deployments")).json();
        showMain();
        renderCards(data.deployments || []);
        $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
        clearAlert();
      } catch (err) {
        if (err.status !== 401) showAlert(err.message);
      } finally {
        state.refreshing = null;
        if (!state.signedOut) state.refreshTimer = setTimeout(refresh, state.again ? 0 : REFRESH_MS);
      }
    })();
    return state.refreshing;
  }

  function renderCards(deployments) {
    const list = $("deployments");
    list.setAttribute("aria-busy", "false");
    const names = new Set(deployments.map((d) => d.name));
    for (const [name, card] of state.cards) {
      if (!names.has(name)) {
        card.root.remove();
        state.cards.delete(name);
      }
    }
    if (!deployments.length) {
      list.replaceChildren(h("p", { class: "muted", text: "No deployments yet: add a file to the deployments directory." }));
      return;
    }
    list.querySelector(":scope > p")?.remove();
    deployments.forEach((d, index) => {
      const card = state.cards.get(d.name) || makeCard(d.name);
      if (list.children[index] !== card.root) list.insertBefore(card.root, list.children[index] || null);
      updateCard(d);
      if (card.history.open) loadHistory(card, false);
    });
    // Builds running meanwhile (webhook, file change, another tab) are followed live. current_build is
    // the build whose image runs (ended by definition): a running one is the newest, last_build.
    for (const d of deployments) {
      const newest = d.last_build;
      if (newest && !ENDED.includes(newest.status)) {
        noteBuild(d.name, newest.id);
        follow(newest.id, d.name);
      }
    }
    // Ended streams nobody looks at are let go.
    for (const [id, stream] of state.streams) {
      if ((stream.end || stream.problem) && state.shown !== id) state.streams.delete(id);
    }
  }

  function makeCard(name) {
    const card = { name, deployment: null };
    card.state = h("span", { class: "badge" });
    card.detail = h("p", { class: "detail muted" });
    card.desc = h("p", { class: "desc" });
    card.url = h("dd");
    card.lastBuild = h("dd");
    card.webhookText = h("code", { class: "webhook" });
    card.copy = h("button", {
      type: "button", class: "small", "aria-label": `Copy the webhook URL of ${name}`,
      onclick: () => copyText(card.webhookText.textContent, card.copy),
    }, "Copy");
    card.file = h("code");
    card.latest = null; // id of the newest build this page started or followed (the list may not know it yet)
    card.currentText = h("span");
    card.currentBadge = h("span", { class: "badge" });
    card.currentPhase = h("span");
    card.currentButton = h("button", {
      type: "button", class: "small", "aria-label": `Show the log of the newest build of ${name}`,
      onclick: () => {
        const id = card.current.dataset.build;
        if (id) showLog(follow(id, name).id);
      },
    }, "Show log");
    card.current = h("p", { class: "current", hidden: true },
      card.currentText, " ", card.currentBadge, card.currentPhase, " ", card.currentButton);
    card.deploy = h("button", { type: "button", class: "primary", "aria-label": `Deploy ${name}`, onclick: () => deploy(name) }, "Deploy");
    card.stop = h("button", { type: "button", "aria-label": `Stop ${name}`, onclick: () => operate(name, "stop") }, "Stop");
    card.start = h("button", { type: "button", "aria-label": `Start ${name}`, onclick: () => operate(name, "start") }, "Start");
    card.tableWrap = h("div", { class: "table-wrap" }, h("p", { class: "muted", text: "Loading…" }));
    card.older = h("button", { type: "button", class: "small", hidden: true, "aria-label": `Older builds of ${name}`, onclick: () => loadHistory(card, true) }, "Older builds");
    card.history = h("details", { class: "history" },
      h("summary", {}, "Build history"), card.tableWrap, card.older);
    card.history.addEventListener("toggle", () => { if (card.history.open) loadHistory(card, false); });
    card.builds = [];
    card.next = null;
    card.root = h("article", { class: "card", "data-name": name, "aria-labelledby": `card-${name}` },
      h("header", { class: "card-head" }, h("h2", { id: `card-${name}`, text: name }), card.state),
      card.detail,
      card.desc,
      h("dl", { class: "facts" },
        h("dt", {}, "URL"), card.url,
        h("dt", {}, "Last build"), card.lastBuild,
        h("dt", {}, "Webhook"), h("dd", { class: "webhook-row" }, card.webhookText, card.copy),
        h("dt", {}, "File"), h("dd", {}, card.file)),
      card.current,
      h("div", { class: "actions", role: "group", "aria-label": `Actions for ${name}` }, card.deploy, card.stop, card.start),
      card.history);
    state.cards.set(name, card);
    return card;
  }

  function updateCard(d) {
    const card = state.cards.get(d.name);
    if (!card) return;
    card.deployment = d;
    setBadge(card.state, STATES[d.state] || ["idle", "?"], d.state || "unknown", `Status of ${d.name}: `);
    card.root.dataset.state = d.state || "";
    setText(card.detail, d.detail);
    setText(card.desc, d.description);
    const href = safeUrl(d.url);
    if (card.url.dataset.href !== (href || "")) {
      card.url.dataset.href = href || "";
      card.url.replaceChildren(href
        ? h("a", { href, target: "_blank", rel: "noopener" }, d.url)
        : h("span", { class: "muted" }, d.state === "running" ? "no URL" : "not reachable"));
    }
    card.lastBuild.replaceChildren(...buildSummary(d.last_build));
    card.webhookText.textContent = d.webhook_url || "—";
    card.copy.hidden = !d.webhook_url;
    card.file.textContent = d.file || "—";
    updateCurrent(d.name);
    updateButtons(d.name);
  }

  function buildSummary(build) {
    if (!build) return [h("span", { class: "muted" }, "none yet")];
    const parts = [];
    if (build.commit) parts.push(h("code", { title: build.commit }, short(build.commit, 7)));
    if (build.commit_message) parts.push(h("q", {}, firstLine(build.commit_message)));
    if (build.trigger) parts.push(h("span", {}, build.trigger));
    parts.push(h("span", {}, duration(build.duration_seconds)));
    const when = build.finished_at || build.started_at || build.created_at;
    if (when) parts.push(h("time", { datetime: when, title: new Date(when).toLocaleString() }, ago(when)));
    const items = [badge(BUILD_STATUSES[build.status], build.status || "?")];
    parts.forEach((part) => items.push(" · ", part));
    if (build.error) items.push(h("div", { class: "error-text" }, build.error));
    return [h("span", { class: "build-line" }, ...items)];
  }

  // A build this page saw start (deploy, or a follow of a running one): newer than the list may say.
  function noteBuild(name, id) {
    const card = state.cards.get(name);
    if (card && (!card.latest || newer(id, card.latest))) card.latest = id;
  }

  // A build's end event carries the final build: it is the card's last build until the list says more.
  function noteEnd(name, id, build) {
    const card = state.cards.get(name);
    const d = card?.deployment;
    if (!d || !build || build.id !== id) return;
    if (!d.last_build || !newer(d.last_build.id, id)) {
      d.last_build = build;
      card.lastBuild.replaceChildren(...buildSummary(build));
    }
  }

  // Ids are "YYYYmmdd-HHMMSS-xxxx": time order to the second (the suffix is random, so ignored).
  const newer = (a, b) => String(a).slice(0, 15) > String(b).slice(0, 15);

  // The card's newest-build line, always shown once a build exists: it follows a running build's phase
  // as its SSE stream tells it, then shows its final status, with the button that opens its log.
  function updateCurrent(name) {
    const card = state.cards.get(name);
    if (!card) return;
    const listed = card.deployment?.last_build;
    let id = card.latest;
    if (listed && (!id || !newer(id, listed.id))) id = listed.id;
    card.current.hidden = !id;
    if (!id) return;
    const stream = state.streams.get(id);
    const known = listed && listed.id === id ? listed.status : null;
    let status;
    if (stream?.end) status = stream.end.status || "ENDED";
    else if (ENDED.includes(known)) status = known;
    else if (stream) status = stream.problem ? "DISCONNECTED" : "BUILDING";
    else status = known || "PENDING";
    const running = !ENDED.includes(status) && status !== "ENDED" && status !== "DISCONNECTED";
    card.current.dataset.build = id;
    card.current.dataset.running = running ? "true" : "false";
    card.currentText.textContent = `Build ${id}`;
    setBadge(card.currentBadge, BUILD_STATUSES[status] || ["warn", "⚠"], status, "Status: ");
    card.currentPhase.textContent = running && stream?.phase ? ` ${stream.phase}` : "";
  }

  function updateButtons(name) {
    const card = state.cards.get(name);
    if (!card || !card.deployment) return;
    const s = card.deployment.state;
    const busy = state.busy.has(name);
    card.deploy.disabled = busy || s === "building";
    card.stop.disabled = busy || s === "stopped" || s === "not deployed";
    card.start.disabled = busy || s === "running" || s === "building";
  }

  async function loadHistory(card, older) {
    const before = older && card.next ? `&before=${enc(card.next)}` : "";
    try {
      const response = await api(`/api/deployments/${enc(card.name)}/builds?limit=${HISTORY_PAGE}${before}`);
      const data = await response.json();
      card.builds = older ? card.builds.concat(data.builds || []) : data.builds || [];
      card.next = data.next ?? null;
      renderHistory(card);
    } catch (err) {
      if (err.status !== 401) card.tableWrap.replaceChildren(h("p", { class: "error-text" }, err.message));
    }
  }

  function renderHistory(card) {
    card.older.hidden = !card.next;
    if (!card.builds.length) {
      card.tableWrap.replaceChildren(h("p", { class: "muted" }, "No builds yet."));
      return;
    }
    // The build id is the button that opens its log: one column less at phone width.
    const head = [["Build", h("span", { class: "offscreen" }, " (opens its log)")], "Status", "Trigger", "Commit", "Message", "Started", "Duration"];
    const rows = card.builds.map((b) => h("tr", {},
      h("td", {}, h("button", {
        type: "button", class: "link build-id", "aria-label": `Show the log of build ${b.id}`,
        onclick: () => showLog(follow(b.id, card.name).id),
      }, ...breakable(b.id))),
      h("td", {}, badge(BUILD_STATUSES[b.status], b.status || "?")),
      h("td", { class: "opt" }, b.trigger || "—"),
      h("td", { class: "opt2" }, b.commit ? h("code", { title: b.commit }, short(b.commit, 7)) : "—"),
      h("td", { class: "opt msg" }, firstLine(b.commit_message || "")),
      h("td", { class: "opt" }, b.created_at ? h("time", { datetime: b.created_at, title: new Date(b.created_at).toLocaleString() }, ago(b.created_at)) : "—"),
      h("td", {}, duration(b.duration_seconds))));
    card.tableWrap.replaceChildren(h("table", {},
      h("caption", { class: "offscreen" }, `Builds of ${card.name}, newest first`),
      h("thead", {}, h("tr", {}, head.map((t, i) => h("th", { scope: "col", class: [2, 4, 5].includes(i) ? "opt" : i === 3 ? "opt2" : null }, t)))),
      h("tbody", {}, rows)));
  }

  // -- the log panel ------------------------------------------------------------------

  function showPending(message) {
    state.shown = null;
    $("log").replaceChildren();
    $("log-title").textContent = "Live log";
    $("log-status").hidden = true;
    $("log-close").hidden = true;
    $("log-phase").textContent = message;
  }

  function showLog(id) {
    const stream = state.streams.get(id);
    if (!stream) return;
    state.shown = id;
    const log = $("log");
    log.replaceChildren();
    if (stream.dropped) appendLine("problem", `… ${stream.dropped} earlier lines not kept in the page`);
    for (const [kind, text] of stream.lines) appendLine(kind, text);
    log.scrollTop = log.scrollHeight;
    renderPanelHead();
    $("logpanel").scrollIntoView({ block: "nearest" });
  }

  function renderPanelHead() {
    const stream = state.streams.get(state.shown);
    if (!stream) return;
    $("log-title").textContent = `Log of ${stream.deployment}, build ${stream.id}`;
    const status = stream.end ? stream.end.status || "ENDED" : stream.problem ? "DISCONNECTED" : "BUILDING";
    const look = BUILD_STATUSES[status] || ["warn", "⚠"];
    setBadge($("log-status"), look, status, "Build status: ");
    $("log-status").hidden = false;
    $("log-close").hidden = false;
    $("log-phase").textContent = stream.end
      ? `Ended ${duration(stream.end.duration_seconds)}`
      : stream.problem || (stream.phase ? `Phase: ${stream.phase}` : "Waiting for the first line…");
  }

  function appendLine(kind, text) {
    const log = $("log");
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
    // Inline spans ending in "\n": copying from the view gives the log's own lines back.
    log.append(h("span", { class: `line ${kind}` }, `${text}\n`));
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function closeLog() {
    const stream = state.streams.get(state.shown);
    // A follower nobody watches costs a connection: let it go (a deploy's own stream keeps running).
    if (stream && !stream.end && !state.busy.has(stream.deployment)) {
      stream.controller.abort();
      state.streams.delete(stream.id);
    }
    showPending("Deploy a deployment or open a build's logs to see them here.");
  }

  // -- token, alerts, views --------------------------------------------------------------

  function askToken(why) {
    state.signedOut = true;
    clearTimeout(state.refreshTimer);
    for (const stream of state.streams.values()) stream.controller.abort();
    state.streams.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    if (why) $("login-why").textContent = why;
    $("token").value = "";
    $("token").focus();
  }

  function showMain() {
    state.signedOut = false;
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = !token();
  }

  function showAlert(message) {
    $("alert").textContent = message;
    $("alert").hidden = false;
  }

  function clearAlert() {
    $("alert").hidden = true;
    $("alert").textContent = "";
  }

  // -- small helpers ------------------------------------------------------------------------

  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) el.append(child);
    }
    return el;
  }

  // Status is never colour alone: a symbol and the word, the colour on top.
  function badge(look, text) {
    return setBadge(h("span", { class: "badge" }), look || ["idle", "?"], text, "");
  }

  function setBadge(el, look, text, spoken) {
    const [tone, symbol] = look || ["idle", "?"];
    el.className = `badge tone-${tone}`;
    el.dataset.status = text;
    el.replaceChildren(h("span", { "aria-hidden": "true" }, symbol), " ",
      spoken ? h("span", { class: "offscreen" }, spoken) : "", h("span", { class: "status-text" }, text));
    return el;
  }

  function setText(el, text) {
    el.textContent = text || "";
    el.hidden = !text;
  }

  function safeUrl(url) {
    if (!url) return null;
    try {
      const parsed = new URL(url, location.href);
      return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
    } catch (_) {
      return null;
    }
  }

  // Build ids are "YYYYmmdd-HHMMSS-xxxx": let a narrow table cell break after the date.
  function breakable(id) {
    const text = String(id ?? "");
    const at = text.indexOf("-");
    return at < 0 ? [text] : [text.slice(0, at + 1), h("wbr"), text.slice(at + 1)];
  }

  const short = (text, n) => String(text ?? "").slice(0, n);
  const firstLine = (text) => String(text ?? "").split("\n")[0];

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    const m = Math.floor(seconds / 60);
    return `${m} min ${String(Math.round(seconds % 60)).padStart(2, "0")} s`;
  }

  function ago(iso) {
    const then = new Date(iso).getTime();
    if (Number.isNaN(then)) return String(iso);
    const s = Math.max(0, (Date.now() - then) / 1000);
    if (s < 60) return "just now";
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  // -- start -----------------------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("login-why").textContent = "Checking the token…";
      refresh();
    });
    $("refresh").addEventListener("click", () => refresh());
    $("signout").addEventListener("click", () => askToken("Token forgotten: enter it again to go on."));
    $("log-close").addEventListener("click", closeLog);
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && !state.signedOut) scheduleRefresh(0);
    });
    refresh();
  }

  start();
})();
