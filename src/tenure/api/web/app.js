// Tenure's board: columns of tasks with live lease countdowns, fleet figures and
// an events feed, kept current by the board's event stream.
//
// How it stays cheap with hundreds of tasks: every card is kept in a Map by task
// id and updated in place (never a full rebuild); an event only marks its task
// dirty, and dirty tasks are fetched together after a short pause; figures are
// refetched at most once a second and a half; countdowns tick on the client from
// each lease's expiry and the server's clock offset.
//
// And with a long history: the done column holds only the tasks completed
// last (as many as the server first sent); older ones are counted, not shown.
"use strict";
(function () {
  const COLUMNS = ["todo", "in_progress", "blocked", "done"];
  const PRIORITY = { urgent: 0, high: 1, medium: 2, low: 3 };
  const FLUSH_MS = 200;
  const STATS_MS = 1500;
  const FEED_MAX = 100;

  const ui = {
    select: document.getElementById("board-select"),
    live: document.getElementById("live"),
    whoami: document.getElementById("whoami"),
    signOut: document.getElementById("sign-out"),
    addButton: document.getElementById("add-task"),
    addDialog: document.getElementById("add-dialog"),
    addForm: document.getElementById("add-form"),
    board: document.getElementById("board"),
    events: document.getElementById("events"),
    toast: document.getElementById("toast"),
    columns: {},
  };
  for (const status of COLUMNS) {
    const section = ui.board.querySelector(`[data-status="${status}"]`);
    ui.columns[status] = { list: section.querySelector(".cards"), count: section.querySelector(".count"), order: [] };
  }

  const state = {
    session: null,
    boardId: null,
    offsetMs: 0, // server clock minus this browser's clock
    cards: new Map(), // task id -> {el, task, status, sig, parts}
    dirty: new Set(),
    flushTimer: null,
    statsTimer: null,
    statsAt: 0,
    source: null,
    generation: 0, // bumped on board switch: stale answers are dropped
  };

  // ------------------------------------------------------------------ helpers
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method && opts.method !== "GET") {
      opts.headers["X-CSRF-Token"] = state.session ? state.session.csrf_token : "";
      if (opts.body !== undefined) opts.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(path, opts);
    if (response.status === 401) {
      window.location.assign("/login");
      throw new Error("signed out");
    }
    const body = response.status === 204 ? {} : await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }

  function toast(message, bad) {
    ui.toast.textContent = message;
    ui.toast.classList.toggle("bad", Boolean(bad));
    ui.toast.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { ui.toast.hidden = true; }, 4000);
  }

  // A code such as `recovery_budget_exhausted` in words; people's text as it is.
  function words(text) {
    return /^[a-z0-9_]+$/.test(text) ? text.replace(/_/g, " ") : text;
  }

  function serverNow() { return Date.now() + state.offsetMs; }

  function syncClock(nowIso) {
    if (nowIso) state.offsetMs = Date.parse(nowIso) - Date.now();
  }

  function clock(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const r = String(s % 60).padStart(2, "0");
    return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }

  function timeOfDay(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false });
  }

  const STATE_LABEL = {
    active: "active", expiring_soon: "expiring soon", in_grace: "in grace",
    suspect: "suspect", expired: "expired", ended: "ended",
  };

  // The lease's state now, judged like the server does, so it moves between fetches.
  function leaseState(lease, nowMs) {
    if (lease.ended_at) return "ended";
    if (nowMs >= Date.parse(lease.recover_after)) return "expired";
    if (lease.suspect_since) return "suspect";
    const left = (Date.parse(lease.expires_at) - nowMs) / 1000;
    if (left < 0) return "in_grace";
    if (left < state.session.warning_threshold_s) return "expiring_soon";
    return "active";
  }

  // -------------------------------------------------------------------- cards
  function orderKey(task) {
    if (task.status === "todo") return [task.handoff ? 0 : 1, PRIORITY[task.priority] ?? 9, task.created_at || "", task.id];
    if (task.status === "blocked") return [task.dead_lettered ? 0 : 1, PRIORITY[task.priority] ?? 9, task.id, ""];
    if (task.status === "done") return [0, 0, invert(task.completed_at || task.updated_at || ""), task.id];
    return [PRIORITY[task.priority] ?? 9, 0, task.created_at || "", task.id];
  }

  // Newest first for done tasks: compare the complement of each character.
  function invert(text) {
    return Array.from(text, (ch) => String.fromCharCode(0xffff - ch.charCodeAt(0))).join("");
  }

  function before(a, b) {
    for (let i = 0; i < a.length; i += 1) {
      if (a[i] < b[i]) return true;
      if (a[i] > b[i]) return false;
    }
    return false;
  }

  function placeCard(card) {
    const column = ui.columns[card.status];
    const order = column.order;
    const key = orderKey(card.task);
    card.key = key;
    let lo = 0;
    let hi = order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(state.cards.get(order[mid]).key, key)) lo = mid + 1; else hi = mid;
    }
    order.splice(lo, 0, card.task.id);
    const next = lo + 1 < order.length ? state.cards.get(order[lo + 1]).el : null;
    column.list.insertBefore(card.el, next);
  }

  function unplaceCard(card) {
    const order = ui.columns[card.status].order;
    const index = order.indexOf(card.task.id);
    if (index >= 0) order.splice(index, 1);
  }

  function updateCounts() {
    for (const status of COLUMNS) {
      const shown = ui.columns[status].order.length;
      ui.columns[status].count.textContent = status === "done" ? shown + state.doneHidden : shown;
    }
    const older = ui.board.querySelector('[data-status="done"] .older');
    older.hidden = state.doneHidden === 0;
    older.textContent = `and ${state.doneHidden.toLocaleString()} done earlier, not shown`;
  }

  // Whether a done task the page does not show is one of the hidden ones: it
  // sorts at or after the last card that was hidden (completion times never
  // change, so a task completed since sorts before it).
  function amongHidden(task) {
    return state.doneHidden > 0 && state.doneCutoff !== null && !before(orderKey(task), state.doneCutoff);
  }

  // Keep the done column to its size: the oldest cards go, and are counted.
  function trimDone() {
    const order = ui.columns.done.order;
    while (order.length > state.doneShown) {
      const card = state.cards.get(order.pop());
      card.el.remove();
      state.cards.delete(card.task.id);
      state.doneHidden += 1;
      state.doneCutoff = card.key;
    }
  }

  function badge(text, kind) { return el("span", `badge ${kind || ""}`.trim(), text); }

  function buildCard(task) {
    const li = el("li", "card");
    li.dataset.taskId = task.id;
    const lease = task.lease;
    const head = el("div", "card-head");
    head.append(el("span", "task-id", task.id), badge(task.priority, `priority ${task.priority}`));
    li.append(head, el("div", "title", task.title));
    const parts = {};
    const badges = el("div", "badges");
    if (task.dead_lettered) { li.classList.add("dead"); badges.append(badge("dead letter", "danger")); }
    if (task.recovery_count > 0) badges.append(badge(`recovered ×${task.recovery_count}`, "muted"));
    for (const flag of task.flags || []) {
      if (flag !== "dead_letter") badges.append(badge(flag.replace(/_/g, " "), "flag"));
    }
    if (lease) {
      li.classList.add("held");
      parts.state = badge("", "state");
      badges.prepend(parts.state);
      for (const flag of lease.flags || []) {
        if (!(task.flags || []).includes(flag)) badges.append(badge(flag, "flag"));
      }
    }
    if (badges.childElementCount) li.append(badges);
    if (lease) {
      const agent = el("div", "agent");
      agent.append(el("span", "dot"), el("span", "agent-id", lease.agent_id), el("span", "epoch", `epoch ${lease.epoch}`));
      const progress = el("div", "progress");
      const bar = el("div", "bar");
      const fill = el("div", "fill");
      fill.style.width = `${Math.max(0, Math.min(100, lease.progress))}%`;
      bar.append(fill);
      progress.append(bar, el("span", "pct", `${lease.progress}%`));
      parts.countdown = el("div", "countdown");
      parts.left = el("span", "left");
      parts.meta = el("span", "meta", `phase ${lease.phase} · grace ${Math.round(lease.grace_s)}s`);
      parts.countdown.append(parts.left, parts.meta);
      li.append(agent, progress, parts.countdown);
      if (lease.message) li.append(el("blockquote", "note", lease.message));
      if (lease.branch) li.append(el("div", "branch", lease.branch));
    }
    if (task.blocked_reason && task.status === "blocked") li.append(el("div", "reason", words(task.blocked_reason)));
    if (task.handoff && !lease && Date.parse(task.handoff.expires_at) > serverNow()) li.append(buildHandoff(task.handoff));
    if (state.session.is_admin) {
      const actions = el("div", "actions");
      if (lease) actions.append(actionButton("unassign", "Unassign"));
      if (task.status === "blocked") actions.append(actionButton("requeue", "Requeue"));
      if (actions.childElementCount) li.append(actions);
    }
    return { el: li, parts };
  }

  function buildHandoff(handoff) {
    const box = el("div", "handoff");
    const line = el("div", "handoff-line");
    line.append(
      el("strong", null, "Handoff"),
      el("span", null, ` from ${handoff.recovered_from_agent} at ${handoff.previous_progress}% · ${words(handoff.recovery_reason)}`),
    );
    box.append(line);
    if (handoff.previous_agent_branch) box.append(el("div", "branch", handoff.previous_agent_branch));
    if (handoff.last_progress_message) box.append(el("blockquote", "note", handoff.last_progress_message));
    return box;
  }

  function actionButton(action, label) {
    const button = el("button", "button small", label);
    button.type = "button";
    button.dataset.action = action;
    return button;
  }

  function tickCard(card, nowMs) {
    const lease = card.task.lease;
    if (!lease || !card.parts.left) return;
    const current = leaseState(lease, nowMs);
    if (card.shownState !== current) {
      card.shownState = current;
      card.parts.state.textContent = STATE_LABEL[current] || current;
      card.parts.state.className = `badge state ${current}`;
      card.el.dataset.state = current;
    }
    const left = (Date.parse(lease.expires_at) - nowMs) / 1000;
    let text;
    if (current === "expired") text = "expired · awaiting the monitor";
    else if (current === "in_grace" || left < 0) text = `in grace · recoverable in ${clock((Date.parse(lease.recover_after) - nowMs) / 1000)}`;
    else if (current === "suspect") {
      const why = lease.suspect_dropped ? "connection dropped" : "session closed";
      text = `${clock(left)} left · suspect (${why}) until ${timeOfDay(lease.recover_after)}`;
    }
    else text = `${clock(left)} left`;
    if (card.parts.left.textContent !== text) card.parts.left.textContent = text;
  }

  function upsert(task) {
    const sig = JSON.stringify(task);
    const existing = state.cards.get(task.id);
    if (existing && existing.sig === sig) return;
    if (!existing && task.status === "done" && amongHidden(task)) return;
    const built = buildCard(task);
    const card = { el: built.el, parts: built.parts, task, status: task.status, sig, shownState: null };
    if (existing) {
      unplaceCard(existing);
      existing.el.replaceWith(card.el);
    }
    state.cards.set(task.id, card);
    placeCard(card);
    trimDone();
    if (!state.cards.has(task.id)) return;
    tickCard(card, serverNow());
    if (existing) flash(card.el);
  }

  function remove(taskId) {
    const card = state.cards.get(taskId);
    if (!card) {
      // Named by an event but not shown: most likely a hidden done task, deleted.
      state.doneHidden = Math.max(0, state.doneHidden - 1);
      return;
    }
    unplaceCard(card);
    card.el.remove();
    state.cards.delete(taskId);
  }

  function flash(node) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the animation
    node.classList.add("changed");
  }

  function resetBoard() {
    state.cards.clear();
    for (const status of COLUMNS) {
      ui.columns[status].order = [];
      ui.columns[status].list.replaceChildren();
    }
    ui.events.replaceChildren();
  }

  // ------------------------------------------------------------------ figures
  function setFigure(name, value) {
    const node = document.querySelector(`[data-figure="${name}"] .value`);
    if (node) node.textContent = value;
    const box = node && node.parentElement;
    if (box && box.classList.contains("warn")) box.classList.toggle("alert", Number(value) > 0);
  }

  async function loadStats() {
    const generation = state.generation;
    const stats = await api(`/ui/api/boards/${encodeURIComponent(state.boardId)}/statistics`);
    if (generation !== state.generation) return;
    const recoveries = Object.values(stats.recoveries || {}).reduce((a, b) => a + b, 0);
    setFigure("recoveries", recoveries);
    setFigure("revivals", stats.revivals);
    setFigure("reclaimed", (stats.false_recoveries || {}).reclaimed || 0);
    setFigure("lost", (stats.false_recoveries || {}).lost || 0);
    setFigure("stale", stats.stale_refused);
    setFigure("dead", stats.dead_letters);
  }

  function scheduleStats() {
    if (state.statsTimer) return;
    const wait = Math.max(0, STATS_MS - (Date.now() - state.statsAt));
    state.statsTimer = setTimeout(() => {
      state.statsTimer = null;
      state.statsAt = Date.now();
      loadStats().catch((err) => toast(err.message, true));
    }, wait);
  }

  // -------------------------------------------------------------------- feed
  const EVENT_KIND = {
    "lease.recovered": "danger", "task.dead_lettered": "danger", "lease.escalated": "warn",
    "lease.stalled": "warn", "lease.suspect": "warn", "lease.stale_refused": "warn",
    "lease.revived": "good", "lease.reclaimed": "good", "lease.created": "info",
  };

  function feedItem(event) {
    const li = el("li", `event ${EVENT_KIND[event.type] || ""}`.trim());
    li.dataset.eventId = event.id;
    const data = event.data || {};
    const detail = data.reason || data.recovery_reason || (data.progress !== undefined ? `${data.progress}%` : "");
    li.append(
      el("time", null, timeOfDay(event.at)),
      el("span", "type", event.type),
      el("span", "subject", [event.task_id, event.agent_id].filter(Boolean).join(" · ")),
    );
    if (detail) li.append(el("span", "detail", words(String(detail))));
    if (event.task_id) li.dataset.taskId = event.task_id;
    return li;
  }

  function addEvents(events, prepend) {
    const fragment = document.createDocumentFragment();
    for (const event of prepend ? events : events.slice().reverse()) fragment.append(feedItem(event));
    ui.events.prepend(fragment);
    while (ui.events.childElementCount > FEED_MAX) ui.events.lastElementChild.remove();
  }

  // ------------------------------------------------------------------- live
  function markDirty(taskId) {
    state.dirty.add(taskId);
    if (!state.flushTimer) state.flushTimer = setTimeout(flushDirty, FLUSH_MS);
  }

  async function flushDirty() {
    state.flushTimer = null;
    const ids = Array.from(state.dirty).slice(0, 200);
    for (const id of ids) state.dirty.delete(id);
    if (state.dirty.size) state.flushTimer = setTimeout(flushDirty, FLUSH_MS);
    if (!ids.length) return;
    const generation = state.generation;
    const query = ids.map(encodeURIComponent).join(",");
    try {
      const answer = await api(`/ui/api/boards/${encodeURIComponent(state.boardId)}/tasks?ids=${query}`);
      if (generation !== state.generation) return;
      syncClock(answer.now);
      for (const task of answer.tasks) upsert(task);
      for (const id of answer.missing || []) remove(id);
      updateCounts();
      tick();
    } catch (err) {
      for (const id of ids) state.dirty.add(id);
      toast(err.message, true);
    }
  }

  function follow(head) {
    if (state.source) state.source.close();
    const url = `/ui/api/boards/${encodeURIComponent(state.boardId)}/stream?after=${head}`;
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => { ui.live.textContent = "live"; ui.live.className = "live on"; };
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      addEvents([event], true);
      if (event.task_id) markDirty(event.task_id);
      scheduleStats();
    };
    source.onerror = () => {
      ui.live.textContent = "reconnecting…";
      ui.live.className = "live off";
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (signed out, or the server restarted).
        setTimeout(() => { if (state.source === source) loadBoard(); }, 3000);
      }
    };
  }

  // ------------------------------------------------------------------- board
  async function loadBoard() {
    state.generation += 1;
    const generation = state.generation;
    const board = encodeURIComponent(state.boardId);
    const [tasks, events] = await Promise.all([
      api(`/ui/api/boards/${board}/tasks`),
      api(`/ui/api/boards/${board}/events`),
    ]);
    if (generation !== state.generation) return;
    resetBoard();
    syncClock(tasks.now);
    state.doneShown = tasks.done_shown ?? Infinity;
    const doneSent = tasks.tasks.filter((task) => task.status === "done").length;
    state.doneHidden = Math.max(0, (tasks.done_total ?? doneSent) - doneSent);
    for (const task of tasks.tasks) {
      const built = buildCard(task);
      const card = { el: built.el, parts: built.parts, task, status: task.status, sig: JSON.stringify(task), shownState: null };
      card.key = orderKey(task);
      state.cards.set(task.id, card);
    }
    // First paint: sort each column once and append in one go.
    for (const status of COLUMNS) {
      const cards = Array.from(state.cards.values()).filter((c) => c.status === status);
      cards.sort((a, b) => (before(a.key, b.key) ? -1 : before(b.key, a.key) ? 1 : 0));
      const fragment = document.createDocumentFragment();
      for (const card of cards) fragment.append(card.el);
      ui.columns[status].order = cards.map((c) => c.task.id);
      ui.columns[status].list.append(fragment);
    }
    const done = ui.columns.done.order;
    state.doneCutoff = done.length ? state.cards.get(done[done.length - 1]).key : null;
    updateCounts();
    tick();
    addEvents(events.events, false);
    await loadStats();
    follow(events.head);
  }

  // Countdowns and lease states move every second; the figures that follow from
  // them are counted from the cards, so they agree with what the page shows.
  function tick() {
    const now = serverNow();
    const seen = { held: 0, expiring_soon: 0, in_grace: 0, suspect: 0 };
    for (const status of ["in_progress", "blocked", "todo"]) {
      for (const id of ui.columns[status].order) {
        const card = state.cards.get(id);
        tickCard(card, now);
        if (card.task.lease) {
          seen.held += 1;
          if (card.shownState in seen) seen[card.shownState] += 1;
        }
      }
    }
    setFigure("active", seen.held);
    setFigure("attention", `${seen.expiring_soon} · ${seen.in_grace} · ${seen.suspect}`);
  }

  async function chooseBoard(boardId) {
    state.boardId = boardId;
    ui.select.value = boardId;
    if (window.location.hash !== `#board=${boardId}`) history.replaceState(null, "", `#board=${encodeURIComponent(boardId)}`);
    await loadBoard();
  }

  // ----------------------------------------------------------------- actions
  ui.board.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button || !state.session.is_admin) return;
    const taskId = button.closest(".card").dataset.taskId;
    const action = button.dataset.action;
    button.disabled = true;
    try {
      const path = `/ui/api/boards/${encodeURIComponent(state.boardId)}/tasks/${encodeURIComponent(taskId)}/${action}`;
      await api(path, { method: "POST" });
      toast(`${action === "unassign" ? "Unassigned" : "Requeued"} ${taskId}`);
      markDirty(taskId);
    } catch (err) {
      toast(err.message, true);
      button.disabled = false;
    }
  });

  ui.events.addEventListener("click", (event) => {
    const item = event.target.closest("li[data-task-id]");
    const card = item && state.cards.get(item.dataset.taskId);
    if (card) { card.el.scrollIntoView({ block: "center", behavior: "smooth" }); flash(card.el); }
  });

  ui.addButton.addEventListener("click", () => {
    ui.addForm.reset();
    ui.addForm.querySelector(".dialog-error").hidden = true;
    ui.addDialog.showModal();
  });
  document.getElementById("add-cancel").addEventListener("click", () => ui.addDialog.close());
  ui.addForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(ui.addForm);
    const body = { id: form.get("id"), title: form.get("title"), priority: form.get("priority") };
    if (form.get("description")) body.description = form.get("description");
    const error = ui.addForm.querySelector(".dialog-error");
    try {
      const task = await api(`/ui/api/boards/${encodeURIComponent(state.boardId)}/tasks`, { method: "POST", body: JSON.stringify(body) });
      ui.addDialog.close();
      upsert(task);
      updateCounts();
      toast(`Added ${task.id}`);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    }
  });

  ui.signOut.addEventListener("click", async () => {
    try { await api("/logout", { method: "POST" }); } catch (_) { /* leave anyway */ }
    window.location.assign("/login");
  });

  // Boards made since the page loaded appear when the selector is opened.
  let boardsReadAt = 0;
  ui.select.addEventListener("focus", () => {
    if (Date.now() - boardsReadAt > 5000) {
      boardsReadAt = Date.now();
      loadBoards().catch(() => { /* keep the list we have */ });
    }
  });

  ui.select.addEventListener("change", () => chooseBoard(ui.select.value).catch((err) => toast(err.message, true)));

  // -------------------------------------------------------------------- start
  async function loadBoards() {
    const { boards } = await api("/ui/api/boards");
    ui.select.replaceChildren(...boards.map((b) => {
      const option = el("option", null, b.name && b.name !== b.id ? `${b.name} (${b.id})` : b.id);
      option.value = b.id;
      return option;
    }));
    if (state.boardId) ui.select.value = state.boardId;
    ui.select.disabled = !state.session.is_admin && boards.length < 2;
    return boards;
  }

  async function start() {
    state.session = await api("/ui/api/session");
    const session = state.session;
    ui.whoami.textContent = session.is_admin ? "admin" : `viewer · ${session.board_id}`;
    ui.addButton.hidden = !session.is_admin;
    document.body.classList.toggle("is-admin", session.is_admin);
    const boards = await loadBoards();
    if (!boards.length) {
      ui.live.textContent = "no boards yet";
      return;
    }
    const wanted = decodeURIComponent((window.location.hash.match(/board=([^&]+)/) || [])[1] || "");
    const chosen = boards.some((b) => b.id === wanted) ? wanted : boards[0].id;
    await chooseBoard(chosen);
    setInterval(tick, 1000);
  }

  start().catch((err) => { if (err.message !== "signed out") toast(err.message, true); });
})();
