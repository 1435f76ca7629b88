// Job page: live charts, progress, events and checkpoints over the job's websocket.
//
// The socket (dashboard/consumers.py documents the protocol) sends the stored
// history first, each curve thinned on the server, then every new point, event,
// checkpoint and status as the worker relays them. Every message is an upsert by
// its key (trace + step, event id, checkpoint id), and each (re)connect starts the
// curves again from the fresh history, so nothing is ever drawn twice.
// The socket reconnects by itself (1 s, 2 s, … up to 10 s) until the job ends;
// the final status then redraws the header and checkpoints without a reload.
(function () {
  const live = document.getElementById("job-live");
  if (!live) return;
  const stateLabel = document.getElementById("stream-state");
  let finished = live.dataset.finished === "1";

  // The trace names, as the socket's history and live metrics name them: scope -> figure -> trace name
  // (json_script "trace-names", from dashboard/consumers.py's TRACES).
  const TRACE_NAMES = JSON.parse(document.getElementById("trace-names").textContent);
  // The eval scope is drawn from the checkpoints' metrics (one point per scored epoch), not from metric points.
  const EVAL_NAMES = TRACE_NAMES.eval || {};
  const SCOPES = Object.keys(TRACE_NAMES).filter(function (scope) { return TRACE_NAMES[scope] !== EVAL_NAMES; });
  // The one figure whose value is an object, {grader name: mean score}: each grader is a trace of its own, named
  // TRACE_NAMES[scope].grader_scores followed by the grader's name.
  const PER_GRADER = "grader_scores";
  // The charts of the job's method (json_script "job-charts", from dashboard/views.py's JOB_CHARTS): each draws
  // its figures in every scope that has them.
  const CHARTS = {};
  JSON.parse(document.getElementById("job-charts").textContent).forEach(function (chart) {
    if (document.getElementById(chart.id)) CHARTS[chart.id] = chart;
  });
  const TRAIN = { mode: "lines", line: { color: "#2a6fd6", width: 1.5 } };
  const SAMPLED = { mode: "lines+markers", line: { color: "#d9822b", width: 1.5 }, marker: { size: 4 } };
  const FULL = { mode: "markers", marker: { color: "#1f8a4c", size: 12, symbol: "diamond", line: { color: "#fff", width: 1 } } };
  const SCOPE_STYLE = { train: TRAIN, sampled: SAMPLED, full: FULL };
  const SCOPE_LABEL = { train: "train", sampled: "valid (sampled)", full: "full valid (epoch end)" };
  // A chart of two figures draws the second one dotted, with square markers.
  const SECOND = { train: { line: { dash: "dot" } }, sampled: { line: { dash: "dot" }, marker: { symbol: "square" } },
                   full: { marker: { symbol: "square" } } };
  // One colour per grader (Okabe–Ito), in the order the graders first appear.
  const GRADER_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"];
  const graderColour = {};

  // trace name -> {scope, figure, grader}, for the traces of every scope's figures; grader traces join as their
  // grader first appears.
  const META = {};
  SCOPES.forEach(function (scope) {
    Object.keys(TRACE_NAMES[scope]).forEach(function (figure) {
      if (figure !== PER_GRADER) META[TRACE_NAMES[scope][figure]] = { scope: scope, figure: figure };
    });
  });

  function graderTrace(scope, grader) {
    const name = TRACE_NAMES[scope][PER_GRADER] + grader;
    if (!META[name]) {
      META[name] = { scope: scope, figure: PER_GRADER, grader: grader };
      if (!(grader in graderColour)) graderColour[grader] = GRADER_COLOURS[Object.keys(graderColour).length % GRADER_COLOURS.length];
    }
    return name;
  }

  // The traces a chart draws now: each figure in each scope (a grader chart: each grader known so far, by name).
  function chartTraces(chart) {
    const names = [];
    chart.figures.forEach(function (figure) {
      if (figure === PER_GRADER) {
        const graders = Object.keys(graderColour).sort();
        graders.forEach(function (grader) {
          SCOPES.forEach(function (scope) {
            const name = TRACE_NAMES[scope][PER_GRADER] + grader;
            if (traces[name]) names.push(name);
          });
        });
        return;
      }
      SCOPES.forEach(function (scope) { if (TRACE_NAMES[scope][figure]) names.push(TRACE_NAMES[scope][figure]); });
    });
    return names;
  }

  // The plotly style and legend name of a trace in a chart. The style holds only the keys it sets: plotly refuses
  // a key given as undefined.
  function styleOf(name, chart) {
    const meta = META[name];
    const scopeStyle = SCOPE_STYLE[meta.scope];
    if (meta.grader !== undefined) {
      const colour = graderColour[meta.grader];
      const style = { mode: scopeStyle.mode, name: meta.grader + " · " + SCOPE_LABEL[meta.scope] };
      if (scopeStyle.line) style.line = Object.assign({}, scopeStyle.line, { color: colour }, meta.scope === "train" ? {} : { dash: "dot" });
      if (scopeStyle.marker) style.marker = Object.assign({}, scopeStyle.marker, { color: colour });
      return style;
    }
    if (meta.figure === "learning_rate") return Object.assign({}, scopeStyle, { name: "learning rate" });
    const index = chart.figures.indexOf(meta.figure);
    const label = chart.figures.length > 1 ? ((chart.labels || {})[meta.figure] || meta.figure) + " · " : "";
    const style = Object.assign({}, scopeStyle, { name: label + SCOPE_LABEL[meta.scope] });
    if (index > 0) {
      const second = SECOND[meta.scope];
      if (second.line) style.line = Object.assign({}, scopeStyle.line, second.line);
      if (second.marker) style.marker = Object.assign({}, scopeStyle.marker, second.marker);
    }
    return style;
  }

  // name -> {x: [steps, ascending], y: [values], at: Map(step -> index)}
  let traces = {};
  let pending = {};      // name -> {x: [], y: []} appended since the last draw
  let needsRedraw = false;
  let drawQueued = false;

  function emptyTrace(t) {
    return { x: t.x.slice(), y: t.y.slice(), at: new Map(t.x.map((step, i) => [step, i])) };
  }

  function resetTraces(fromHistory) {
    traces = {};
    Object.keys(META).forEach(function (name) {
      if (META[name].grader === undefined) traces[name] = emptyTrace((fromHistory && fromHistory[name]) || { x: [], y: [] });
    });
    // The grader traces of the history: every trace of a scope's grader part.
    Object.keys(fromHistory || {}).forEach(function (name) {
      SCOPES.forEach(function (scope) {
        const part = TRACE_NAMES[scope][PER_GRADER];
        if (part && name.startsWith(part) && !traces[name]) {
          traces[graderTrace(scope, name.slice(part.length))] = emptyTrace(fromHistory[name]);
        }
      });
    });
    pending = {};
    needsRedraw = true;
    schedule();
  }

  function figure(id) {
    const chart = CHARTS[id];
    chart.drawn = chartTraces(chart);
    const data = chart.drawn.map(function (name) {
      const style = styleOf(name, chart);
      return Object.assign({ type: "scatter", x: traces[name].x.slice(), y: traces[name].y.slice(),
                             hovertemplate: "step %{x}<br>%{y:.5g}<extra>" + style.name + "</extra>" }, style);
    });
    const yaxis = chart.exponent ? { exponentformat: "e" } : chart.share ? { tickformat: ".0%", rangemode: "tozero" } : {};
    const layout = {
      title: { text: chart.title, font: { size: 14 } }, height: 320, margin: { l: 55, r: 10, t: 34, b: 70 },
      xaxis: { title: { text: "step", standoff: 4 }, rangemode: "tozero" }, showlegend: data.length > 1,
      legend: { orientation: "h", y: -0.3, font: { size: 11 } }, yaxis: yaxis,
    };
    return { data: data, layout: layout };
  }

  const config = { responsive: true, displaylogo: false };
  resetTraces(null);
  Object.keys(CHARTS).forEach(function (id) {
    const f = figure(id);
    Plotly.newPlot(id, f.data, f.layout, config);
  });

  function draw() {
    drawQueued = false;
    Object.keys(CHARTS).forEach(function (id) {
      // A grader seen for the first time adds traces to its chart: drawn again whole.
      if (needsRedraw || chartTraces(CHARTS[id]).length !== CHARTS[id].drawn.length) {
        const f = figure(id);
        Plotly.react(id, f.data, f.layout, config);
        return;
      }
      const update = { x: [], y: [] }, indices = [];
      CHARTS[id].drawn.forEach(function (name, index) {
        if (!pending[name]) return;
        update.x.push(pending[name].x);
        update.y.push(pending[name].y);
        indices.push(index);
      });
      if (indices.length) Plotly.extendTraces(id, update, indices);
    });
    pending = {};
    needsRedraw = false;
  }

  function schedule() {
    if (drawQueued) return;
    drawQueued = true;
    window.requestAnimationFrame(draw);
  }

  // An upsert by (trace, step): a step beyond the last is appended, a step already drawn has its
  // value replaced (a resumed job repeats the steps after its checkpoint), any other step falls
  // inside a stretch the server thinned out and is left out.
  function upsert(name, step, value) {
    if (value === null || value === undefined || typeof value !== "number" || !isFinite(value)) return;
    const t = traces[name] || (traces[name] = emptyTrace({ x: [], y: [] }));
    const last = t.x.length ? t.x[t.x.length - 1] : -Infinity;
    if (step > last) {
      t.at.set(step, t.x.length);
      t.x.push(step);
      t.y.push(value);
      const p = pending[name] || (pending[name] = { x: [], y: [] });
      p.x.push(step);
      p.y.push(value);
    } else if (t.at.has(step)) {
      if (t.y[t.at.get(step)] !== value) {
        t.y[t.at.get(step)] = value;
        needsRedraw = true;
      }
    } else {
      return;
    }
    schedule();
  }

  function addPoint(point) {
    const names = TRACE_NAMES[point.scope];
    if (!names) return;
    Object.keys(names).forEach(function (field) {
      if (field === PER_GRADER) {
        const scores = point[field] || {};
        Object.keys(scores).forEach(function (grader) { upsert(graderTrace(point.scope, grader), point.step, scores[grader]); });
      } else {
        upsert(names[field], point.step, point[field]);
      }
    });
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

  // A new checkpoint, or one whose eval scores have just arrived, redraws the table (its row names the eval
  // run its scores come from).
  function addCheckpoint(c) {
    const row = document.querySelector('[data-checkpoint="' + c.id + '"]');
    const scoredBy = (c.metrics && c.metrics.eval_run_id) || "";
    if (!row || row.dataset.evalRun !== scoredBy) refreshCheckpoints();
    addEvalScores(c);
  }

  // --- the eval score per epoch (only on the page of a job that names an eval) -------------------
  // trace name -> Map(epoch -> {y, step}); the page's json_script "eval-curves" holds the scores stored when it
  // was rendered, checkpoint messages bring the rest. Scores are kept across reconnects: they never go away.
  const EVAL_LABELS = { mean_score: "mean score", pass_rate: "pass rate" };
  const EVAL_STYLE = {
    mean_score: { mode: "lines+markers", line: { color: "#1f8a4c", width: 2 }, marker: { size: 8 } },
    pass_rate: { mode: "lines+markers", line: { color: "#7b4fc9", width: 2, dash: "dot" }, marker: { size: 8, symbol: "square" } },
  };
  const evalChart = document.getElementById("chart-eval");
  const evalPoints = {};
  Object.keys(EVAL_NAMES).forEach(function (figure) { evalPoints[EVAL_NAMES[figure]] = new Map(); });

  function setEvalPoint(name, epoch, step, value) {
    const known = evalPoints[name].get(epoch);
    if (known && known.y === value && known.step === step) return false;
    evalPoints[name].set(epoch, { y: value, step: step });
    return true;
  }

  function drawEval() {
    if (!evalChart) return;
    const data = Object.keys(EVAL_NAMES).map(function (figure) {
      const points = Array.from(evalPoints[EVAL_NAMES[figure]].entries()).sort(function (a, b) { return a[0] - b[0]; });
      return Object.assign({
        type: "scatter", name: EVAL_LABELS[figure] || figure, x: points.map(p => p[0]), y: points.map(p => p[1].y),
        customdata: points.map(p => p[1].step),
        hovertemplate: "epoch %{x} · step %{customdata}<br>%{y:.3f}<extra>" + (EVAL_LABELS[figure] || figure) + "</extra>",
      }, EVAL_STYLE[figure] || {});
    });
    const layout = {
      title: { text: evalChart.dataset.title, font: { size: 14 } }, height: 320, margin: { l: 55, r: 10, t: 34, b: 70 },
      xaxis: { title: { text: "epoch", standoff: 4 }, dtick: 1, rangemode: "tozero" },
      // Scores are on the graders' own scale (a model grader's may run past 1); the pass rate is a share.
      yaxis: { rangemode: "tozero" }, showlegend: true,
      legend: { orientation: "h", y: -0.3, font: { size: 11 } },
    };
    Plotly.react(evalChart, data, layout, config);
  }

  function addEvalScores(c) {
    if (!evalChart) return;
    let changed = false;
    Object.keys(EVAL_NAMES).forEach(function (figure) {
      const value = c.metrics && c.metrics[EVAL_NAMES[figure]];
      if (typeof value === "number" && isFinite(value)) changed = setEvalPoint(EVAL_NAMES[figure], c.epoch, c.step, value) || changed;
    });
    if (changed) drawEval();
  }

  if (evalChart) {
    const stored = JSON.parse(document.getElementById("eval-curves").textContent);
    Object.keys(stored).forEach(function (name) {
      if (!evalPoints[name]) return;
      stored[name].x.forEach(function (epoch, i) { setEvalPoint(name, epoch, stored[name].step[i], stored[name].y[i]); });
    });
    drawEval();
  }

  // --- events, newest first ----------------------------------------------------
  function addEvent(e) {
    const list = document.getElementById("job-events");
    if (!list) return;
    const known = list.querySelector('[data-id="' + e.id + '"]');
    if (known) {
      // A metrics event is sent again when its step's validation figures arrive.
      known.lastChild.textContent = " " + e.message;
      return;
    }
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
      // Sent on every (re)connect: the curves start again from it, nothing is merged twice.
      resetTraces(data.traces || {});
      (data.events || []).forEach(addEvent);
      (data.checkpoints || []).forEach(addCheckpoint);
      if (data.status) setStatus(data.status);
    }
  }

  // --- the socket, reconnecting by itself --------------------------------------
  // For a look from the browser's console (and the browser tests): the socket and how often it opened.
  const stream = window.attuneJobStream = { socket: null, connects: 0 };
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
      if (ev.code === 4401 || ev.code === 4403 || ev.code === 4404) { setState("down", "not allowed (" + ev.code + ")"); return; }
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
