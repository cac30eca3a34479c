// Estafeta's pages: copy buttons, confirmations, "select all" boxes and charts. Served from
// the binary; the Content-Security-Policy runs no other script and nothing inline.
(function () {
  "use strict";

  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.textContent;
    var done = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
    }
  }

  // Where the clipboard API is unavailable (plain HTTP), select the text for Ctrl+C.
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest("[data-copy]");
    if (button) copy(button);
  });

  // A destructive form asks first (the button's question, else the form's); confirmed, it
  // says so, and the server answers at once instead of with its confirmation page.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    var button = e.submitter;
    var question = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (!question) return;
    if (!window.confirm(question)) { e.preventDefault(); return; }
    var seen = form.querySelector("input[name='confirmed']");
    if (!seen) {
      seen = document.createElement("input");
      seen.type = "hidden";
      seen.name = "confirmed";
      form.appendChild(seen);
    }
    seen.value = "1";
  });

  document.addEventListener("change", function (e) {
    var all = e.target.closest("[data-select-all]");
    if (!all) return;
    var boxes = document.querySelectorAll("input[name='" + all.getAttribute("data-select-all") + "']");
    boxes.forEach(function (b) { b.checked = all.checked; });
  });

  var palette = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c"];

  function drawCharts(root) {
    if (typeof uPlot === "undefined") return;
    root.querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.getAttribute("data-drawn")) return;
      var data = document.getElementById(el.getAttribute("data-chart"));
      if (!data) return;
      var spec;
      try { spec = JSON.parse(data.textContent); } catch (err) { return; }
      var series = [{}];
      spec.series.forEach(function (s, i) {
        var color = (spec.colors && spec.colors[i]) || palette[i % palette.length];
        // Points too: a minute with traffic between quiet ones is a single point.
        series.push({ label: s, stroke: color, width: 2, spanGaps: true,
                      points: { show: true, size: 4, fill: color } });
      });
      var width = Math.max(280, el.clientWidth || 600);
      el.setAttribute("data-drawn", "1");
      new uPlot({
        width: width, height: 200, series: series,
        scales: { x: { time: spec.time !== false } },
        // UTC, like every time in the tables.
        tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
        axes: [{ label: "UTC" }, { label: spec.unit || "" }],
      }, spec.data, el);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
  document.addEventListener("htmx:afterSwap", function (e) { drawCharts(e.target); });
})();
