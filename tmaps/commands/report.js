// The report page's script (tmaps.commands.report): the epoch slider that moves every map, and
// interactive SVG curves (hover values, drag to zoom, double-click to reset, legend toggles).
// No library, no network. When the maps' first frames have decoded, window.tmapsReadyAt holds
// the milliseconds since navigation (benchmarks/report_page.py reads it).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var hidden = {};

  // ------------------------------------------------------------ maps
  var frameImages = Array.prototype.slice.call(document.querySelectorAll("img.map-frame"));
  frameImages.forEach(function (image) { image.frames = JSON.parse(image.dataset.frames); });
  document.querySelectorAll("img.figure").forEach(function (image) { image.src = data.images[Number(image.dataset.image)]; });
  var slider = document.getElementById("epoch-slider");
  var label = document.getElementById("epoch-label");

  function showEpoch(position) {
    var epoch = data.epochs[position];
    frameImages.forEach(function (image) {
      var chosen = 0;
      image.frames.forEach(function (frame, index) { if (frame[0] <= epoch) chosen = index; });
      if (image.dataset.shown !== String(chosen)) {
        image.dataset.shown = String(chosen);
        image.src = data.images[image.frames[chosen][1]];
      }
      image.nextElementSibling.textContent = "epoch " + image.frames[chosen][0] + (image.frames[chosen][0] === epoch ? "" : " (latest at epoch " + epoch + ")");
    });
    if (label) label.textContent = "epoch " + epoch + " (" + (position + 1) + " of " + data.epochs.length + ")";
  }

  if (slider && data.epochs.length) {
    slider.addEventListener("input", function () { showEpoch(Number(slider.value)); });
    var play = document.querySelector(".epoch-bar .play"), timer = null;
    play.addEventListener("click", function () {
      if (timer) { clearInterval(timer); timer = null; play.textContent = "play"; return; }
      play.textContent = "stop";
      timer = setInterval(function () {
        slider.value = (Number(slider.value) + 1) % data.epochs.length;
        showEpoch(Number(slider.value));
      }, 700);
    });
    showEpoch(Number(slider.value));
  }
  Promise.all(frameImages.map(function (image) { return image.decode ? image.decode().catch(function () {}) : null; })).then(function () {
    window.tmapsReadyAt = performance.now();
    document.documentElement.dataset.ready = "true";
  });

  // ------------------------------------------------------------ curves
  var W = 440, H = 250, M = { l: 58, r: 12, t: 8, b: 34 };

  function niceTicks(low, high, count) {
    var span = high - low || Math.abs(high) || 1;
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var error = span / count / step;
    step *= error >= 7.5 ? 10 : error >= 3.5 ? 5 : error >= 1.5 ? 2 : 1;
    var ticks = [];
    for (var value = Math.ceil(low / step) * step; value <= high + step * 1e-9; value += step) ticks.push(Math.abs(value) < step * 1e-6 ? 0 : value);
    return ticks;
  }

  function format(value) {
    if (value === 0) return "0";
    var size = Math.abs(value);
    return size >= 1e5 || size < 1e-3 ? value.toExponential(2) : String(Number(value.toPrecision(4)));
  }

  // A tick's label with as many decimals as the ticks' spacing needs (4 significant digits would repeat 167.2).
  function tickLabel(value, low, high) {
    var ticks = niceTicks(low, high, 5), step = ticks.length > 1 ? ticks[1] - ticks[0] : Math.abs(value) || 1;
    var size = Math.max(Math.abs(low), Math.abs(high));
    if (size >= 1e5 || (size < 1e-2 && size > 0)) return value.toExponential(Math.max(0, Math.ceil(Math.log10(size / step))));
    return value.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  }

  function nearest(xs, x) {
    var best = 0;
    for (var i = 1; i < xs.length; i++) if (Math.abs(xs[i] - x) < Math.abs(xs[best] - x)) best = i;
    return best;
  }

  function Chart(element, chart) {
    this.element = element;
    this.chart = chart;
    this.zoom = null;
    this.box = document.createElement("div");
    this.tip = document.createElement("div");
    this.tip.className = "tip";
    element.appendChild(this.box);
    element.appendChild(this.tip);
    this.draw();
  }

  Chart.prototype.visible = function () {
    return this.chart.series.filter(function (series) { return !hidden[series.id]; });
  };

  Chart.prototype.draw = function () {
    var self = this, series = this.visible();
    var xs = [].concat.apply([], series.map(function (s) { return s.x; }));
    if (!xs.length) { this.box.innerHTML = "<p class='note'>no visible run</p>"; return; }
    var x0 = this.zoom ? this.zoom[0] : Math.min.apply(null, xs), x1 = this.zoom ? this.zoom[1] : Math.max.apply(null, xs);
    var ys = [];
    series.forEach(function (s) {
      s.x.forEach(function (x, i) {
        if (x >= x0 && x <= x1) ys.push(s.y[i], s.lo ? s.lo[i] : s.y[i], s.hi ? s.hi[i] : s.y[i]);
      });
    });
    if (!ys.length) ys = [0, 1];
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (y0 === y1) { y0 -= Math.abs(y0) * 0.05 || 0.5; y1 += Math.abs(y1) * 0.05 || 0.5; }
    var pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    var sx = function (x) { return M.l + (x - x0) / (x1 - x0) * (W - M.l - M.r); };
    var sy = function (y) { return H - M.b - (y - y0) / (y1 - y0) * (H - M.t - M.b); };
    this.scale = { x0: x0, x1: x1, sx: sx, sy: sy };
    var clip = "clip-" + this.element.dataset.kind + "-" + this.element.dataset.chart;
    var svg = ["<svg viewBox='0 0 " + W + " " + H + "' role='img'><defs><clipPath id='" + clip + "'><rect x='" + M.l + "' y='" + M.t +
      "' width='" + (W - M.l - M.r) + "' height='" + (H - M.t - M.b) + "'/></clipPath></defs>"];
    niceTicks(y0, y1, 5).forEach(function (y) {
      svg.push("<line class='grid' x1='" + M.l + "' x2='" + (W - M.r) + "' y1='" + sy(y) + "' y2='" + sy(y) + "'/>");
      svg.push("<text class='axis' x='" + (M.l - 4) + "' y='" + (sy(y) + 4) + "' text-anchor='end'>" + tickLabel(y, y0, y1) + "</text>");
    });
    niceTicks(x0, x1, 5).forEach(function (x) {
      svg.push("<text class='axis' x='" + sx(x) + "' y='" + (H - M.b + 14) + "' text-anchor='middle'>" + tickLabel(x, x0, x1) + "</text>");
    });
    svg.push("<text class='axis' x='" + ((W + M.l) / 2) + "' y='" + (H - 4) + "' text-anchor='middle'>step</text>");
    svg.push("<g clip-path='url(#" + clip + ")'>");
    series.forEach(function (s) {
      var colour = palette[s.id % palette.length];
      if (s.lo) {
        var band = s.x.map(function (x, i) { return sx(x) + "," + sy(s.hi[i]); });
        for (var i = s.x.length - 1; i >= 0; i--) band.push(sx(s.x[i]) + "," + sy(s.lo[i]));
        svg.push("<polygon points='" + band.join(" ") + "' fill='" + colour + "' fill-opacity='0.18' stroke='none'/>");
      }
      svg.push("<polyline points='" + s.x.map(function (x, i) { return sx(x) + "," + sy(s.y[i]); }).join(" ") +
        "' fill='none' stroke='" + colour + "' stroke-width='1.6'/>");
      if (s.x.length <= 40) {
        s.x.forEach(function (x, i) { svg.push("<circle cx='" + sx(x) + "' cy='" + sy(s.y[i]) + "' r='2.2' fill='" + colour + "'/>"); });
      }
    });
    svg.push("</g><rect class='frame' x='" + M.l + "' y='" + M.t + "' width='" + (W - M.l - M.r) + "' height='" + (H - M.t - M.b) + "'/>");
    svg.push("<line class='hover-line' y1='" + M.t + "' y2='" + (H - M.b) + "' visibility='hidden'/>");
    svg.push("<rect class='selection' y='" + M.t + "' height='" + (H - M.t - M.b) + "' width='0' visibility='hidden'/>");
    svg.push("<rect class='overlay' x='" + M.l + "' y='" + M.t + "' width='" + (W - M.l - M.r) + "' height='" + (H - M.t - M.b) +
      "' fill='transparent' pointer-events='all'/></svg>");
    this.box.innerHTML = svg.join("");
    var root = this.box.querySelector("svg"), overlay = root.querySelector(".overlay");
    var line = root.querySelector(".hover-line"), selection = root.querySelector(".selection"), dragFrom = null;
    function svgX(event) {
      var box = root.getBoundingClientRect();
      return (event.clientX - box.left) * W / box.width;
    }
    overlay.addEventListener("mousemove", function (event) {
      var at = svgX(event);
      if (dragFrom !== null) {
        selection.setAttribute("x", Math.min(dragFrom, at));
        selection.setAttribute("width", Math.abs(at - dragFrom));
        selection.setAttribute("visibility", "visible");
      }
      self.hover(at, event, line);
    });
    overlay.addEventListener("mouseleave", function () { line.setAttribute("visibility", "hidden"); self.tip.style.display = "none"; });
    overlay.addEventListener("mousedown", function (event) { dragFrom = svgX(event); event.preventDefault(); });
    overlay.addEventListener("mouseup", function (event) {
      var at = svgX(event), from = dragFrom;
      dragFrom = null;
      selection.setAttribute("visibility", "hidden");
      if (from !== null && Math.abs(at - from) > 6) {
        var toData = function (px) { return self.scale.x0 + (px - M.l) / (W - M.l - M.r) * (self.scale.x1 - self.scale.x0); };
        self.zoom = [toData(Math.min(from, at)), toData(Math.max(from, at))];
        self.draw();
      }
    });
    overlay.addEventListener("dblclick", function () { self.zoom = null; self.draw(); });
  };

  Chart.prototype.hover = function (at, event, line) {
    var scale = this.scale, x = scale.x0 + (at - M.l) / (W - M.l - M.r) * (scale.x1 - scale.x0);
    var rows = [], lineX = null;
    this.visible().forEach(function (s) {
      var i = nearest(s.x, x);
      if (lineX === null) lineX = scale.sx(s.x[i]);
      var band = s.lo ? " ± " + format((s.hi[i] - s.lo[i]) / 2) : "";
      rows.push("<div><span class='swatch' style='background:" + palette[s.id % palette.length] + "'></span>" + s.label.replace(/</g, "&lt;") +
        " (step " + format(s.x[i]) + "): <b class='value'>" + format(s.y[i]) + "</b>" + band + "</div>");
    });
    if (lineX === null) return;
    line.setAttribute("x1", lineX); line.setAttribute("x2", lineX); line.setAttribute("visibility", "visible");
    this.tip.innerHTML = rows.join("");
    this.tip.style.display = "block";
    var box = this.element.getBoundingClientRect();
    var left = event.clientX - box.left + 14;
    this.tip.style.left = Math.min(left, box.width - this.tip.offsetWidth) + "px";
    this.tip.style.top = (event.clientY - box.top + 14) + "px";
  };

  var charts = [];
  document.querySelectorAll(".chart").forEach(function (element) {
    charts.push(new Chart(element, data.charts[element.dataset.kind][Number(element.dataset.chart)]));
  });
  document.querySelectorAll(".legend").forEach(function (legend) {
    data.series.forEach(function (name, id) {
      var button = document.createElement("button");
      button.type = "button";
      button.dataset.series = String(id);
      button.innerHTML = "<span class='swatch' style='background:" + palette[id % palette.length] + "'></span>";
      button.appendChild(document.createTextNode(name));
      button.addEventListener("click", function () {
        hidden[id] = !hidden[id];
        document.querySelectorAll(".legend button[data-series='" + id + "']").forEach(function (other) { other.classList.toggle("off", hidden[id]); });
        charts.forEach(function (chart) { chart.draw(); });
      });
      legend.appendChild(button);
    });
  });
})();
