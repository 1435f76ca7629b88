// Job page: live charts, progress, events and checkpoints over the job's websocket.
//
// The socket sends the stored history first (each curve thinned on the server),
// then every new point, event, checkpoint and status as the worker relays them.
// Points are keyed by scope + step and events by id, so a history sent again
// after a reconnect, or a point that arrives twice, is never drawn twice.
// The socket reconnects by itself (1 s, 2 s, … up to 10 s) until the job ends;
// the final status then redraws the header and checkpoints without a reload.
(function () {
  const live = document.getElementById("job-live");
  if (!live) return;
  const stateLabel = document.getElementById("stream-state");
  let finished = live.dataset.finished === "1";

  const SCOPES = ["train", "sampled", "full"];
  const CHARTS = {
    "chart-loss": { title: "Loss", field: "loss", traces: ["train", "sampled", "full"] },
    "chart-accuracy": { title: "Token accuracy", field: "accuracy", traces: ["train", "sampled", "full"] },
    "chart-lr": { title: "Learning rate", field: "learning_rate", traces: ["train"] },
  };
  const TRACE_STYLE = {
    train: { name: "train", mode: "lines", line: { color: "#2a6fd6", width: 1.5 } },
    sampled: { name: "valid (sampled)", mode: "lines+markers", line: { color: "#d9822b", width: 1.5 },
               marker: { size: 4 } },
    full: { name: "full valid (epoch end)", mode: "markers",
            marker: { color: "#1f8a4c", size: 12, symbol: "diamond", line: { color: "#fff", width: 1 } } },
  };

  const points = { train: new Map(), sampled: new Map(), full: new Map() };
  const lastStep = { train: -Infinity, sampled: -Infinity, full: -Infinity };
  let pending = [];
  let needsRedraw = false;
  let drawQueued = false;

  function traceData(scope, field) {
    const rows = Array.from(points[scope].values()).filter(p => p[field] !== null && p[field] !== undefined)
      .sort((a, b) => a.step - b.step);
    return { x: rows.map(p => p.step), y: rows.map(p => p[field]), customdata: rows.map(p => p.epoch) };
  }

  function figure(id) {
    const chart = CHARTS[id];
    const data = chart.traces.map(function (scope) {
      const style = TRACE_STYLE[scope];
      return Object.assign({ type: "scatter", name: style.name, mode: style.mode, line: style.line,
        marker: style.marker, hovertemplate: "step %{x} · epoch %{customdata:.2f}<br>%{y:.5g}<extra>" +
        style.name + "</extra>" }, traceData(scope, chart.field));
    });
    const layout = {
      title: { text: chart.title, font: { size: 14 } }, height: 300, margin: { l: 55, r: 10, t: 34, b: 36 },
      xaxis: { title: { text: "step" }, rangemode: "tozero" }, showlegend: chart.traces.length > 1,
      legend: { orientation: "h", y: -0.22, font: { size: 11 } },
      yaxis: chart.field === "learning_rate" ? { exponentformat: "e" } : {},
    };
    return { data: data, layout: layout };
  }

  const config = { responsive: true, displaylogo: false };
  Object.keys(CHARTS).forEach(function (id) {
    const f = figure(id);
    Plotly.newPlot(id, f.data, f.layout, config);
  });

  function redrawAll() {
    Object.keys(CHARTS).forEach(function (id) {
      const f = figure(id);
      Plotly.react(id, f.data, f.layout, config);
    });
  }

  function extend() {
    Object.keys(CHARTS).forEach(function (id) {
      const chart = CHARTS[id];
      const update = { x: [], y: [], customdata: [] };
      const indices = [];
      chart.traces.forEach(function (scope, index) {
        const rows = pending.filter(p => p.scope === scope && p[chart.field] !== null && p[chart.field] !== undefined);
        if (!rows.length) return;
        update.x.push(rows.map(p => p.step));
        update.y.push(rows.map(p => p[chart.field]));
        update.customdata.push(rows.map(p => p.epoch));
        indices.push(index);
      });
      if (indices.length) Plotly.extendTraces(id, update, indices);
    });
  }

  function draw() {
    drawQueued = false;
    if (needsRedraw) redrawAll(); else if (pending.length) extend();
    pending = [];
    needsRedraw = false;
  }

  function schedule() {
    if (drawQueued) return;
    drawQueued = true;
    window.requestAnimationFrame(draw);
  }

  function addPoint(point) {
    const seen = points[point.scope];
    if (!seen || seen.has(point.step)) return;
    seen.set(point.step, point);
    if (point.step > lastStep[point.scope]) {
      lastStep[point.scope] = point.step;
      pending.push(point);
    } else {
      needsRedraw = true;  // an older point (history after a reconnect): draw in step order
    }
    schedule();
  }

  // --- header: progress, speed, status ------------------------------------
  function setStatus(s) {
    const progress = document.getElementById("job-progress");
    const text = document.getElementById("job-progress-text");
    const speed = document.getElementById("job-speed");
    if (progress && typeof s.progress === "number") progress.value = s.progress;
    if (text) {
      text.textContent = Math.floor((s.progress || 0) * 100) + "% · step " + s.step +
        (s.total_steps ? " of " + s.total_steps : "") + " · epoch " + Number(s.epoch || 0).toFixed(2);
    }
    if (speed && s.tokens_per_second) speed.textContent = "· " + Math.round(s.tokens_per_second) + " tokens/s";
    const header = document.getElementById("job-header");
    if (header && (header.dataset.status !== s.status ||
                   (s.fine_tuned_model && !document.getElementById("fine-tuned-model")))) {
      header.dataset.status = s.status;
      htmx.trigger(header, "job-changed");
    }
    if (["succeeded", "failed", "cancelled"].includes(s.status) && !finished) {
      finished = true;
      // The last checkpoint takes the fine-tuned model's name once the job has succeeded.
      refreshCheckpoints();
      setState("finished", "");
    }
  }

  function refreshCheckpoints() {
    const section = document.getElementById("job-checkpoints");
    if (section) htmx.trigger(section, "job-checkpoint");
  }

  function addCheckpoint(c) {
    if (!document.querySelector('[data-checkpoint="' + c.id + '"]')) refreshCheckpoints();
  }

  // --- events, newest first ----------------------------------------------------
  function addEvent(e) {
    const list = document.getElementById("job-events");
    if (!list || list.querySelector('[data-id="' + e.id + '"]')) return;
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.dataset.id = e.id;
    item.dataset.created = e.created_at;
    item.className = e.level + " fresh";
    const time = document.createElement("time");
    time.textContent = new Date(e.created_at * 1000).toISOString().slice(11, 19);
    const level = document.createElement("span");
    level.className = "level";
    level.textContent = e.level;
    item.append(time, level, " " + e.message);
    // Newest first: before the first event that is not newer than this one.
    const older = Array.from(list.children).find(li => Number(li.dataset.created) <= e.created_at);
    list.insertBefore(item, older || null);
  }

  function handle(message) {
    const kind = message.kind, data = message.data;
    if (kind === "metric") addPoint(data);
    else if (kind === "event") addEvent(data);
    else if (kind === "checkpoint") addCheckpoint(data);
    else if (kind === "status") setStatus(data);
    else if (kind === "history") {
      (data.metrics || []).forEach(addPoint);
      (data.events || []).slice().reverse().forEach(addEvent);
      (data.checkpoints || []).forEach(addCheckpoint);
      if (data.status) setStatus(data.status);
    }
  }

  // --- the socket, reconnecting by itself --------------------------------------
  const stream = window.attuneJobStream = { socket: null, connects: 0, points: points };
  let delay = 1000;

  function setState(cls, text) {
    stateLabel.className = "muted small " + cls;
    stateLabel.textContent = text || cls;
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + window.location.host + live.dataset.wsPath);
    stream.socket = socket;
    socket.onopen = function () {
      stream.connects += 1;
      delay = 1000;
      setState(finished ? "finished" : "live", finished ? "finished" : "live");
    };
    socket.onmessage = function (ev) {
      let message;
      try { message = JSON.parse(ev.data); } catch (err) { return; }
      if (Array.isArray(message)) message.forEach(handle); else handle(message);
    };
    socket.onclose = function (ev) {
      if (stream.socket !== socket) return;
      if (finished) { setState("finished", "finished"); return; }
      if (ev.code === 4403 || ev.code === 4404) { setState("down", "not allowed (" + ev.code + ")"); return; }
      setState("down", "reconnecting in " + Math.round(delay / 1000) + " s…");
      window.setTimeout(connect, delay);
      delay = Math.min(10000, delay * 2);
    };
  }
  connect();

  // --- copy the fine-tuned model name ------------------------------------------
  document.addEventListener("click", function (ev) {
    const button = ev.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    const done = function () { button.textContent = "Copied"; setTimeout(() => { button.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done);
    else {
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      document.execCommand("copy");
      done();
    }
  });
})();
