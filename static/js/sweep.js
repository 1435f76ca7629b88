// A sweep's parallel-coordinates plot: one line per job with a value of the ranking metric, an axis per swept
// field and one for the metric, lines coloured by it with the best end bright (json_script "sweep-plot-data",
// built by dashboard/views.py's _sweep_plot; values that are not numbers come as ticks).
(function () {
  const chart = document.getElementById("sweep-plot");
  if (!chart) return;
  const plot = JSON.parse(document.getElementById("sweep-plot-data").textContent);
  const dimensions = plot.dimensions.concat([{ label: plot.metric.label, values: plot.metric.values }]);
  Plotly.newPlot(chart, [{
    type: "parcoords",
    dimensions: dimensions,
    line: { color: plot.metric.values, colorscale: "Viridis", reversescale: !plot.higher, showscale: true,
            colorbar: { title: { text: plot.metric.label } } },
  }], { margin: { l: 60, r: 60, t: 40, b: 20 }, font: { size: 12 } }, { responsive: true, displaylogo: false });
})();
