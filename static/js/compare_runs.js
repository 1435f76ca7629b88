// Compare runs: one colour per job; training curves as lines, sampled validation
// dotted, full validation as large markers at epoch ends. Data comes from the page
// (json_script "compare-series", already thinned on the server; "trace-names"); the page holds one element per
// chart, `data-figure` naming the metric point field it draws (loss, token accuracy, a reinforcement job's mean
// reward…). Jobs that name an eval also get an eval chart: the mean score and pass rate of each epoch
// checkpoint, by epoch.
(function () {
  const series = JSON.parse(document.getElementById("compare-series").textContent);
  const style = {
    train: { mode: "lines", line: { width: 1.5 } },
    sampled: { mode: "lines", line: { width: 1.5, dash: "dot" } },
    full: { mode: "markers", marker: { size: 11, symbol: "diamond", line: { width: 1, color: "#fff" } } },
  };
  const names = { train: "train", sampled: "valid (sampled)", full: "full valid" };

  // The trace names as the job page's websocket history names them: scope -> figure -> trace name
  // (json_script "trace-names", from dashboard/consumers.py's TRACES).
  const TRACE_NAMES = JSON.parse(document.getElementById("trace-names").textContent);

  function traces(metric) {
    const out = [];
    series.forEach(function (job) {
      Object.keys(TRACE_NAMES).forEach(function (scope) {
        const curve = TRACE_NAMES[scope][metric] && job.curves[TRACE_NAMES[scope][metric]];
        if (!curve) return;
        const s = style[scope];
        out.push({
          // Runs with the same seed overlap step for step; see-through lines keep both visible.
          x: curve.x, y: curve.y, name: job.label + " · " + names[scope], legendgroup: job.id, opacity: 0.75,
          type: "scatter", mode: s.mode, line: Object.assign({ color: job.colour }, s.line || {}),
          marker: Object.assign({ color: job.colour }, s.marker || {}),
          hovertemplate: "step %{x}<br>" + metric + " %{y:.4f}<extra>" + job.id + "</extra>",
        });
      });
    });
    return out;
  }

  function layout(title) {
    return {
      title: { text: title, font: { size: 14 } }, margin: { l: 50, r: 10, t: 36, b: 40 }, height: 380,
      xaxis: { title: { text: "step", standoff: 4 } }, legend: { orientation: "h", y: -0.2, font: { size: 11 } },
    };
  }

  // The eval scope (mean score, pass rate) per job, by epoch: one point per scored epoch checkpoint.
  const EVAL_NAMES = TRACE_NAMES.eval || {};
  const EVAL_LABELS = { mean_score: "mean score", pass_rate: "pass rate" };
  const EVAL_DASH = { mean_score: "solid", pass_rate: "dot" };

  function evalTraces() {
    const out = [];
    series.forEach(function (job) {
      Object.keys(EVAL_NAMES).forEach(function (figure) {
        const curve = job.eval && job.eval[EVAL_NAMES[figure]];
        if (!curve || !curve.x.length) return;
        const label = EVAL_LABELS[figure] || figure;
        out.push({
          x: curve.x, y: curve.y, customdata: curve.step, name: job.label + " · " + label, legendgroup: job.id,
          type: "scatter", mode: "lines+markers", line: { color: job.colour, width: 2, dash: EVAL_DASH[figure] || "solid" },
          marker: { color: job.colour, size: 8 },
          hovertemplate: "epoch %{x} · step %{customdata}<br>" + label + " %{y:.3f}<extra>" + job.id + "</extra>",
        });
      });
    });
    return out;
  }

  const config = { responsive: true, displaylogo: false };
  document.querySelectorAll(".chart[data-figure]").forEach(function (chart) {
    const figureLayout = layout(chart.dataset.title);
    if (chart.dataset.share) figureLayout.yaxis = { tickformat: ".0%", rangemode: "tozero" };
    Plotly.newPlot(chart, traces(chart.dataset.figure), figureLayout, config);
  });
  const evalChart = document.getElementById("compare-eval");
  if (evalChart) {
    const evalLayout = layout(evalChart.dataset.title);
    evalLayout.xaxis = { title: { text: "epoch", standoff: 4 }, dtick: 1 };
    Plotly.newPlot(evalChart, evalTraces(), evalLayout, config);
  }
})();
