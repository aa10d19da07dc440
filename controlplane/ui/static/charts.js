// A minimal SVG line-chart renderer for the traffic charts: time on x, one path per series,
// gaps where a point is null. Ours rather than a library: no registry for browser packages is
// reachable from where this project builds, and these charts need nothing more (see
// docs/operations.md, "Traffic"). Colours come from app.css classes (the CSP forbids inline
// styles), so the file is self-contained and served from /ui/static like every script.
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var WIDTH = 360;
  var HEIGHT = 140;
  var PAD = { left: 46, right: 8, top: 10, bottom: 22 };

  function node(name, attrs, parent) {
    var element = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (key) {
      element.setAttribute(key, attrs[key]);
    });
    if (parent) {
      parent.appendChild(element);
    }
    return element;
  }

  // The smallest 1, 2 or 5 times a power of ten at or above `value`: round axis labels.
  function niceMax(value) {
    if (!(value > 0)) {
      return 1;
    }
    var power = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= value) {
        return steps[i] * power;
      }
    }
    return 10 * power;
  }

  function format(value) {
    if (value === null || value === undefined) {
      return "—";
    }
    if (value >= 100) {
      return value.toFixed(0);
    }
    if (value >= 10) {
      return value.toFixed(1);
    }
    return Number(value.toPrecision(2)).toString();
  }

  function clock(seconds) {
    var date = new Date(seconds * 1000);
    return date.toTimeString().slice(0, 5);
  }

  function latest(points) {
    for (var i = points.length - 1; i >= 0; i--) {
      if (points[i] !== null) {
        return points[i];
      }
    }
    return null;
  }

  // "M x y L x y ..." that lifts the pen over nulls; a lone point becomes a short tick.
  function pathData(points, x, y) {
    var parts = [];
    var drawing = false;
    points.forEach(function (value, i) {
      if (value === null) {
        drawing = false;
        return;
      }
      var next = i + 1 < points.length ? points[i + 1] : null;
      var prev = i > 0 ? points[i - 1] : null;
      parts.push((drawing ? "L" : "M") + x(i).toFixed(1) + " " + y(value).toFixed(1));
      if (!drawing && next === null && prev === null) {
        parts.push("l 2 0");
      }
      drawing = true;
    });
    return parts.join(" ");
  }

  // Draw `chart` = {timestamps, series: [{name, points}], unit} into `svg`.
  function line(svg, chart) {
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    svg.setAttribute("viewBox", "0 0 " + WIDTH + " " + HEIGHT);
    var count = chart.timestamps.length;
    var max = 0;
    chart.series.forEach(function (series) {
      series.points.forEach(function (value) {
        if (value !== null && value > max) {
          max = value;
        }
      });
    });
    var top = niceMax(max);
    var plotW = WIDTH - PAD.left - PAD.right;
    var plotH = HEIGHT - PAD.top - PAD.bottom;
    var x = function (i) {
      return PAD.left + (count > 1 ? (plotW * i) / (count - 1) : 0);
    };
    var y = function (value) {
      return PAD.top + plotH - (plotH * value) / top;
    };
    [0, top / 2, top].forEach(function (value) {
      node("line", { class: "grid", x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }, svg);
      var label = node("text", { class: "axis", x: PAD.left - 4, y: y(value) + 4, "text-anchor": "end" }, svg);
      label.textContent = format(value);
    });
    if (count > 0) {
      var first = node("text", { class: "axis", x: PAD.left, y: HEIGHT - 6 }, svg);
      first.textContent = clock(chart.timestamps[0]);
      var last = node("text", { class: "axis", x: WIDTH - PAD.right, y: HEIGHT - 6, "text-anchor": "end" }, svg);
      last.textContent = clock(chart.timestamps[count - 1]);
    }
    chart.series.forEach(function (series, index) {
      node("path", { class: "series line-" + (index % 6), d: pathData(series.points, x, y) }, svg);
    });
  }

  // A chart-less trend line for a table cell.
  function sparkline(svg, points) {
    while (svg.firstChild) {
      svg.removeChild(svg.firstChild);
    }
    var width = 120;
    var height = 28;
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    var top = niceMax(Math.max.apply(null, points.concat([0])));
    var x = function (i) {
      return points.length > 1 ? (width * i) / (points.length - 1) : 0;
    };
    var y = function (value) {
      return height - 2 - ((height - 4) * value) / top;
    };
    node("line", { class: "grid", x1: 0, x2: width, y1: y(0), y2: y(0) }, svg);
    node("path", { class: "series line-0", d: pathData(points, x, y) }, svg);
  }

  window.ModelplaneCharts = { line: line, sparkline: sparkline, latest: latest, format: format };
})();
