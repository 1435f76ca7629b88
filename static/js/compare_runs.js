// Compare runs: one colour per job; training curves as lines, sampled validation
// dotted, full validation as large markers at epoch ends. Data comes from the page
// (json_script "compare-series", already thinned on the server; "trace-names").
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
        const curve = job.curves[TRACE_NAMES[scope][metric]];
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

  const config = { responsive: true, displaylogo: false };
  Plotly.newPlot("compare-loss", traces("loss"), layout("Loss"), config);
  Plotly.newPlot("compare-accuracy", traces("accuracy"), layout("Token accuracy"), config);
})();
