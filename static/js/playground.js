// The compare page: pick snapshots, write a conversation, stream every output side by side,
// then rate. In blind mode the server sends positions only; names arrive with the rating's answer.
(function () {
  "use strict";
  const form = document.getElementById("compare-form");
  if (!form) return;
  const max = Number(form.dataset.max);
  const searchUrl = form.dataset.searchUrl;
  const csrf = form.querySelector("[name=csrfmiddlewaretoken]").value;
  const results = document.getElementById("snapshot-results");
  const chips = document.getElementById("snapshot-chips");
  const search = document.getElementById("snapshot-search");
  const epochInput = document.getElementById("snapshot-epoch");
  const turns = document.getElementById("turns");
  const rateForm = document.getElementById("rate-form");
  const columnsBox = document.getElementById("columns");
  const submitRating = document.getElementById("submit-rating");
  const rateStatus = document.getElementById("rate-status");
  let picked = JSON.parse(document.getElementById("preselected-data").textContent || "[]");
  let current = null;  // the comparison being shown: {id, columns, rate_url, finished:Set}

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v; else if (v !== null && v !== undefined) node.setAttribute(k, v);
    });
    children.forEach(c => node.append(c));
    return node;
  }

  // Snapshot picker ---------------------------------------------------------
  function renderChips() {
    chips.replaceChildren(...picked.map((s, i) => {
      const remove = el("button", {type: "button", title: "Remove", "aria-label": "Remove " + s.name, text: "×"});
      remove.addEventListener("click", () => { picked.splice(i, 1); renderChips(); });
      return el("span", {class: "chip", "data-snapshot": s.name}, s.label, remove);
    }));
  }

  let searchTimer = null;
  async function runSearch() {
    const params = new URLSearchParams({q: search.value});
    if (epochInput.value !== "") params.set("epoch", epochInput.value);
    const resp = await fetch(searchUrl + "?" + params, {headers: {Accept: "application/json"}});
    const data = await resp.json();
    results.replaceChildren(...(data.data || []).map(s => {
      const row = el("div", {role: "option", "data-snapshot": s.name, text: s.label});
      row.addEventListener("click", () => {
        if (picked.some(p => p.name === s.name)) return;
        if (picked.length >= max) { showError("snapshots", "At most " + max + " snapshots."); return; }
        picked.push(s); renderChips(); showError("snapshots", "");
      });
      return row;
    }));
  }
  [search, epochInput].forEach(input => input.addEventListener("input", () => {
    clearTimeout(searchTimer); searchTimer = setTimeout(runSearch, 200);
  }));

  // Conversation -------------------------------------------------------------
  function addTurn(role, content) {
    const select = el("select", {"aria-label": "Role"}, el("option", {value: "user", text: "user"}),
                      el("option", {value: "assistant", text: "assistant"}));
    select.value = role;
    const text = el("textarea", {rows: 3, class: "turn-content", placeholder: "Message"});
    text.value = content || "";
    const remove = el("button", {type: "button", text: "×", title: "Remove this turn"});
    const row = el("div", {class: "turn-row"}, select, text, remove);
    remove.addEventListener("click", () => { if (turns.children.length > 1) row.remove(); });
    turns.append(row);
  }
  document.getElementById("add-turn").addEventListener("click", () => {
    const last = turns.lastElementChild && turns.lastElementChild.querySelector("select").value;
    addTurn(last === "user" ? "assistant" : "user", "");
  });
  const firstMessage = document.getElementById("first-user-message");
  addTurn("user", firstMessage ? JSON.parse(firstMessage.textContent) : "");

  function conversation() {
    const messages = [];
    const system = document.getElementById("system-prompt").value.trim();
    if (system) messages.push({role: "system", content: system});
    turns.querySelectorAll(".turn-row").forEach(row => {
      messages.push({role: row.querySelector("select").value, content: row.querySelector("textarea").value});
    });
    return messages;
  }

  function showError(field, message) {
    const box = document.querySelector(`[data-error-for="${field}"]`) || document.querySelector('[data-error-for="__all__"]');
    box.textContent = message;
  }

  // Run and stream -----------------------------------------------------------
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    document.querySelectorAll("[data-error-for]").forEach(b => { b.textContent = ""; });
    document.getElementById("snapshots-input").value = JSON.stringify(picked.map(s => s.name));
    document.getElementById("messages-input").value = JSON.stringify(conversation());
    const resp = await fetch(form.action, {method: "POST", body: new FormData(form), headers: {"X-CSRFToken": csrf}});
    const data = await resp.json();
    if (!resp.ok) {
      Object.entries(data.errors || {}).forEach(([field, errs]) => showError(field, [].concat(errs).join(" ")));
      return;
    }
    start(data);
  });

  function start(data) {
    current = {id: data.id, rate_url: data.rate_url, columns: data.columns, finished: new Set(), blind: data.blind};
    rateForm.hidden = false;
    rateForm.querySelectorAll("input[type=radio]").forEach(r => { r.checked = false; });
    submitRating.disabled = true;
    rateStatus.textContent = "Rating unlocks when every output has finished.";
    document.getElementById("rate-errors").textContent = "";
    columnsBox.replaceChildren(...data.columns.map(column));
    document.getElementById("best-options").replaceChildren(...data.columns.map(c =>
      el("label", {}, el("input", {type: "radio", name: "verdict", value: "best:" + c.position, disabled: ""}),
         " " + c.label + " is best")));
    const source = new EventSource(data.stream_url);
    source.onmessage = msg => {
      const event = JSON.parse(msg.data);
      if (event.finished) { source.close(); unlock(); return; }
      const box = columnsBox.querySelector(`[data-position="${event.position}"]`);
      if (event.delta) box.querySelector(".output").textContent += event.delta;
      if (event.done) finishColumn(box, event);
    };
    source.onerror = () => { source.close(); if (current.finished.size < current.columns.length) unlock(true); };
  }

  function column(c) {
    const scores = el("div", {class: "scores", role: "radiogroup", "aria-label": "Score for " + c.label});
    for (let s = 1; s <= 5; s++) {
      scores.append(el("label", {}, el("input", {type: "radio", name: "score_" + c.position, value: s, disabled: ""}), " " + s));
    }
    return el("section", {class: "column", "data-position": c.position},
      el("h3", {}, el("span", {class: "column-label", text: c.label}),
         el("span", {class: "snapshot-name", text: c.snapshot || ""})),
      el("div", {class: "output", "aria-live": "polite"}),
      el("div", {class: "timing", text: "waiting…"}),
      scores,
      el("textarea", {name: "comment_" + c.position, rows: 2, placeholder: "Comment (optional)", disabled: ""}));
  }

  function finishColumn(box, event) {
    const out = box.querySelector(".output");
    if (event.status === "error") { out.classList.add("error"); out.textContent = event.error; }
    else out.textContent = event.text;
    showTiming(box, event);
    box.dataset.finishReason = event.finish_reason || "";
    box.dataset.done = "1";
    current.finished.add(event.position);
  }

  // Blind columns get their timing with the names: until then only "finished".
  function showTiming(box, figures) {
    const parts = [];
    if (figures.n_tokens === undefined) parts.push("finished");
    if (figures.ttft_ms !== null && figures.ttft_ms !== undefined) parts.push("TTFT " + Math.round(figures.ttft_ms) + " ms");
    if (figures.tokens_per_second) parts.push(figures.tokens_per_second.toFixed(1) + " tok/s");
    if (figures.n_tokens !== undefined) parts.push(figures.n_tokens + " tokens");
    if (figures.finish_reason === "length") parts.push("hit max tokens");
    box.querySelector(".timing").textContent = parts.join(" · ");
  }

  function unlock(broken) {
    rateForm.querySelectorAll("input, textarea").forEach(i => { i.disabled = false; });
    submitRating.disabled = false;
    rateStatus.textContent = broken ? "The stream was interrupted; rate what arrived." : "All outputs finished: rate them.";
  }

  // Rate and reveal ----------------------------------------------------------
  rateForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    const resp = await fetch(current.rate_url, {method: "POST", body: new FormData(rateForm), headers: {"X-CSRFToken": csrf}});
    const data = await resp.json();
    const errors = document.getElementById("rate-errors");
    if (!resp.ok) { errors.textContent = Object.values(data.errors || {}).flat().join(" "); return; }
    errors.textContent = "";
    data.columns.forEach(c => {
      const box = columnsBox.querySelector(`[data-position="${c.position}"]`);
      box.querySelector(".snapshot-name").textContent = c.snapshot;
      if (c.error) box.querySelector(".output").textContent = c.error;  // the reason, now that names show
      showTiming(box, {...c, finish_reason: box.dataset.finishReason});
    });
    rateForm.querySelectorAll("input, textarea").forEach(i => { i.disabled = true; });
    submitRating.disabled = true;
    rateStatus.replaceChildren("Saved. Names revealed. ", el("a", {href: data.leaderboard_url, text: "Leaderboard →"}));
  });

  renderChips();
  runSearch();
})();
