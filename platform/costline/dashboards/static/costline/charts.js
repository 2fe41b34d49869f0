// Draws every Plotly figure a page embeds (costline.dashboards.figures.embed):
// <div data-figure="ID"> beside <script type="application/json" id="ID">{data, layout}</script>.
// Loaded after the app's own plotly.min.js; no CDN, so charts work offline.
(function () {
  "use strict";
  var config = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  document.querySelectorAll("[data-figure]").forEach(function (div) {
    var source = document.getElementById(div.dataset.figure);
    if (!source) return;
    var figure = JSON.parse(source.textContent);
    Plotly.newPlot(div, figure.data, figure.layout, config);
  });
})();
